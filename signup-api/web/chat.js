// The call's chat panel: the shard relays each message to the whole room (the sender too)
// with the sender's name from its join token, the shard's time and a per-room number
// (`seq`), so every person sees the same messages in the same order. While the panel is
// collapsed, a badge counts what arrived unread. See docs/signalling.md ("Chat").

/** The longest message the shard relays, in characters (Unicode scalar values). */
export const MAX_CHAT_CHARS = 2000;

/** What the shard's refusals mean to the person who typed. */
const REFUSALS = {
  empty: 'Type something first.',
  too_long: `Messages can be at most ${MAX_CHAT_CHARS} characters.`,
  rate_limited: 'You are sending messages too fast: wait a moment.',
};

function timeOf(ms) {
  try {
    return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  } catch {
    return '';
  }
}

/**
 * The chat panel over the elements in index.html: `panel` (the aside section), `log` (the
 * list), `form`, `input`, `toggle` (the controls' Chat button), `badge` (its unread count)
 * and `notice` (why a message was not sent).
 */
export class ChatPanel {
  constructor({ panel, log, form, input, toggle, badge, notice }) {
    Object.assign(this, { panel, log, form, input, toggle, badge, notice });
    this.call = null;
    this.unread = 0;
    this.input.maxLength = MAX_CHAT_CHARS;
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
    this.toggle.addEventListener('click', () => this.setOpen(this.panel.hidden));
    this.setOpen(true);
  }

  /** A new call: an empty log (the shard keeps no history). */
  attach(call) {
    this.call = call;
    this.log.replaceChildren();
    this.unread = 0;
    this.notice.textContent = '';
    this.renderBadge();
  }

  setOpen(open) {
    this.panel.hidden = !open;
    this.toggle.setAttribute('aria-expanded', String(open));
    if (open) {
      this.unread = 0;
      this.log.lastElementChild?.scrollIntoView({ block: 'nearest' });
    }
    this.renderBadge();
  }

  submit() {
    const text = this.input.value;
    if (!text.trim()) return;
    if (!this.call?.sendChat(text)) {
      this.notice.textContent = 'Not connected: the message was not sent.';
      return;
    }
    this.notice.textContent = '';
    this.input.value = '';
  }

  /** A `chat` or `chat_refused` message from the shard. */
  receive(message) {
    if (message.type === 'chat_refused') {
      this.notice.textContent = REFUSALS[message.reason] ?? 'The message was not sent.';
      return;
    }
    const item = document.createElement('li');
    item.className = 'chat-message';
    const mine = message.participant_id === this.call?.selfId;
    item.dataset.seq = String(message.seq);
    item.dataset.from = message.participant_id;
    item.dataset.mine = String(mine);
    const head = document.createElement('p');
    head.className = 'chat-head';
    const name = document.createElement('span');
    name.className = 'chat-name';
    // The name comes from the shard (the sender's account), shown as text, never as HTML.
    name.textContent = mine ? `${message.name} (you)` : message.name;
    const time = document.createElement('time');
    time.dateTime = new Date(message.ts_ms).toISOString();
    time.textContent = timeOf(message.ts_ms);
    head.append(name, ' ', time);
    const text = document.createElement('p');
    text.className = 'chat-text';
    text.textContent = message.text;
    item.append(head, text);
    // The channel is ordered and the shard sends by `seq`, so arrival order is the room's
    // order (after a rejoin onto another shard the numbers start again, and still append).
    this.log.append(item);
    if (this.panel.hidden) {
      if (!mine) this.unread += 1;
      this.renderBadge();
    } else {
      item.scrollIntoView({ block: 'nearest' });
    }
  }

  renderBadge() {
    this.badge.hidden = this.unread === 0;
    this.badge.textContent = String(this.unread);
    this.toggle.setAttribute('aria-label', this.unread ? `Chat, ${this.unread} unread` : 'Chat');
  }
}
