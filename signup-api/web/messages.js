// What the user reads for each API error code: short, specific, and saying what to do next.

import { ApiError } from './api.js';

function generic(err) {
  if (!(err instanceof ApiError)) return `Something went wrong (${err.message}).`;
  if (err.code === 'network') return 'Cannot reach Surge. Check your connection and try again.';
  if (err.status >= 500) return 'Surge had a problem handling that. Please try again in a moment.';
  return err.message || 'Something went wrong.';
}

/** Sign-up errors: `{ field, text }`, `field` naming the input the message belongs to. */
export function signupMessage(err) {
  if (!(err instanceof ApiError)) return { field: null, text: generic(err) };
  switch (err.code) {
    case 'email_taken':
      return { field: 'email', text: 'An account with this email already exists. Log in instead, or use another email.' };
    case 'invalid_email':
      return { field: 'email', text: 'Enter a valid email address, like name@example.com.' };
    case 'weak_password': {
      const min = /at least (\d+)/.exec(err.message ?? '')?.[1];
      return {
        field: 'password',
        text: `This password is too short${min ? `: use at least ${min} characters` : ''}. A few unrelated words make a strong one.`,
      };
    }
    case 'password_too_long': {
      const max = /at most (\d+)/.exec(err.message ?? '')?.[1];
      return { field: 'password', text: `This password is too long${max ? ` (at most ${max} characters)` : ''}.` };
    }
    case 'invalid_display_name':
      return { field: 'display_name', text: 'Enter the name others will see: 1 to 64 letters, no special characters.' };
    case 'invalid_credentials':
      return { field: null, text: 'Your account was created, but logging in failed. Try logging in.' };
    default:
      return { field: null, text: generic(err) };
  }
}

export function loginMessage(err) {
  if (err instanceof ApiError && err.code === 'invalid_credentials') return 'Wrong email or password.';
  return generic(err);
}

export function contactMessage(err) {
  if (err instanceof ApiError) {
    switch (err.code) {
      case 'invalid_email':
        return 'Enter a valid email address.';
      case 'cannot_add_self':
        return 'That is you. Add someone else.';
      case 'too_many_contact_requests':
        return 'You have many requests nobody has answered yet. Withdraw some before asking more people.';
      case 'contact_request_not_found':
        return 'That request is no longer there.';
      case 'rate_limited':
        return 'You are adding contacts too quickly. Wait a moment and try again.';
      default:
        break;
    }
  }
  return generic(err);
}

export function roomMessage(err) {
  if (err instanceof ApiError && err.code === 'invalid_room_name') {
    return 'Room names are 1 to 64 characters, without special characters.';
  }
  if (err instanceof ApiError && (err.status === 429 || err.status === 503)) {
    return 'Too many calls are starting right now. Try again in a few seconds.';
  }
  return generic(err);
}

const STATUS_LABELS = { online: 'Online', away: 'Away', busy: 'Busy', offline: 'Offline' };

export function statusLabel(status) {
  return STATUS_LABELS[status] ?? 'Offline';
}

/** Counts down whole seconds, calling `tick(secondsLeft)` each second, resolving at zero. */
export function countdown(seconds, tick) {
  return new Promise((resolve) => {
    const end = Date.now() + seconds * 1000;
    const step = () => {
      const left = Math.ceil((end - Date.now()) / 1000);
      if (left <= 0) {
        resolve();
        return;
      }
      tick(left);
      setTimeout(step, Math.min(1000, end - Date.now()));
    };
    step();
  });
}
