// Injected into a page (a classic script) by the SFU browser test: a minimal WebRTC participant
// that speaks the signalling contract of docs/signalling.md directly, without the web client,
// so a failure here points at the API or the shard rather than at the UI.
(() => {
  // Audio only counts as received while something pulls it out of the jitter buffer: play
  // every remote track in an element, as a real client would.
  function sinkTrack(track) {
    const element = document.createElement(track.kind === 'video' ? 'video' : 'audio');
    element.autoplay = true;
    element.playsInline = true;
    element.srcObject = new MediaStream([track]);
    document.documentElement.append(element);
    element.play().catch(() => {});
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function call(method, path, { body, token, headers = {} } = {}) {
    for (let attempt = 0; ; attempt += 1) {
      const init = { method, headers: { ...headers } };
      if (token) init.headers.Authorization = `Bearer ${token}`;
      if (body !== undefined) {
        init.headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      const response = await fetch(path, init);
      const text = await response.text();
      if ((response.status === 429 || response.status === 503) && attempt < 20) {
        await sleep(1000 * Math.max(1, Number(response.headers.get('Retry-After')) || 1));
        continue;
      }
      if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
      return text ? JSON.parse(text) : null;
    }
  }

  const peer = {
    pc: null,
    channel: null,
    events: [],
    midOwners: {},
    layers: {},
    participantId: null,
    answerSdp: null,
    localStream: null,

    /** Signs up and logs in; returns the session token. */
    async account(name, email, password) {
      await call('POST', '/v1/accounts', {
        body: { email, password, display_name: name },
        headers: { 'Idempotency-Key': crypto.randomUUID() },
      });
      const session = await call('POST', '/v1/sessions', { body: { email, password } });
      return session.token;
    },

    async createRoom(token, name) {
      return call('POST', '/v1/rooms', { token, body: { name } });
    },

    /**
     * Joins `roomId`: publishes camera (three simulcast layers) and microphone when `publish`,
     * otherwise only receives. Resolves once the API relayed the shard's answer.
     */
    async join(token, roomId, publish) {
      const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
      this.pc = pc;
      pc.addEventListener('track', (event) => sinkTrack(event.track));
      const channel = pc.createDataChannel('surge');
      this.channel = channel;
      channel.onmessage = (event) => this.onMessage(JSON.parse(event.data));
      if (publish) {
        const stream = await navigator.mediaDevices.getUserMedia({
          audio: true,
          video: { width: 1280, height: 720, frameRate: 30 },
        });
        this.localStream = stream;
        pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly', streams: [stream] });
        pc.addTransceiver(stream.getVideoTracks()[0], {
          direction: 'sendonly',
          streams: [stream],
          sendEncodings: [
            { rid: 'q', scaleResolutionDownBy: 4 },
            { rid: 'h', scaleResolutionDownBy: 2 },
            { rid: 'f', scaleResolutionDownBy: 1 },
          ],
        });
      }
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((resolve) => {
        if (pc.iceGatheringState === 'complete') return resolve();
        pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && resolve();
        setTimeout(resolve, 3000);
      });
      const response = await fetch(`/v1/rooms/${encodeURIComponent(roomId)}/participants`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/sdp' },
        body: pc.localDescription.sdp,
      });
      const answer = await response.text();
      if (response.status !== 201) throw new Error(`join POST: ${response.status} ${answer}`);
      this.location = response.headers.get('Location');
      this.token = token;
      this.answerSdp = answer;
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      return { location: this.location };
    },

    onMessage(message) {
      this.events.push(message.type);
      switch (message.type) {
        case 'offer':
          this.queue = (this.queue ?? Promise.resolve()).then(async () => {
            await this.pc.setRemoteDescription({ type: 'offer', sdp: message.sdp });
            await this.pc.setLocalDescription(await this.pc.createAnswer());
            this.channel.send(JSON.stringify({ type: 'answer', sdp: this.pc.localDescription.sdp }));
          });
          break;
        case 'tracks':
          this.midOwners = {};
          for (const t of message.tracks) this.midOwners[t.mid] = t;
          break;
        case 'welcome':
          this.participantId = message.participant_id;
          break;
        case 'layer':
          this.layers[message.mid] = message.layer;
          break;
        default:
          break;
      }
    },

    state() {
      return {
        connection: this.pc?.connectionState ?? null,
        channel: this.channel?.readyState ?? null,
        participantId: this.participantId,
        events: this.events,
        tracks: Object.values(this.midOwners),
        layers: this.layers,
      };
    },

    sendMaxHeight(height) {
      for (const t of Object.values(this.midOwners)) {
        if (t.kind === 'video') this.channel.send(JSON.stringify({ type: 'max_height', mid: t.mid, height }));
      }
    },

    /** Inbound video and audio stats, summed over the receiving m-lines. */
    async inbound() {
      const out = {
        framesDecoded: 0,
        frameHeight: 0,
        frameWidth: 0,
        totalSamplesReceived: 0,
        videoBytes: 0,
        videoPacketsLost: 0,
        videoPackets: 0,
        pliCount: 0,
        nackCount: 0,
      };
      const report = await this.pc.getStats();
      report.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          out.framesDecoded += s.framesDecoded ?? 0;
          out.videoBytes += s.bytesReceived ?? 0;
          out.videoPackets += s.packetsReceived ?? 0;
          out.videoPacketsLost += s.packetsLost ?? 0;
          out.pliCount += s.pliCount ?? 0;
          out.nackCount += s.nackCount ?? 0;
          out.frameHeight = Math.max(out.frameHeight, s.frameHeight ?? 0);
          out.frameWidth = Math.max(out.frameWidth, s.frameWidth ?? 0);
        } else if (s.kind === 'audio') {
          out.totalSamplesReceived += s.totalSamplesReceived ?? 0;
        }
      });
      return out;
    },

    /** Outbound video per simulcast rid, with the loss the shard reports back (RTCP RR). */
    async outbound() {
      const layers = {};
      const report = await this.pc.getStats();
      const remote = {};
      report.forEach((s) => {
        if (s.type === 'remote-inbound-rtp') remote[s.localId] = s;
      });
      report.forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video') {
          layers[s.rid ?? '-'] = {
            framesSent: s.framesSent ?? 0,
            frameHeight: s.frameHeight ?? 0,
            bytesSent: s.bytesSent ?? 0,
            packetsSent: s.packetsSent ?? 0,
            lostAtShard: remote[s.id]?.packetsLost ?? null,
            targetBitrate: s.targetBitrate ?? null,
            limitation: s.qualityLimitationReason ?? null,
          };
        }
      });
      return layers;
    },

    /** Leaves with DELETE on the participant resource; resolves to the HTTP status. */
    async leave() {
      const response = await fetch(this.location, { method: 'DELETE', headers: { Authorization: `Bearer ${this.token}` } });
      this.pc.close();
      return response.status;
    },
  };

  window.rawPeer = peer;
})();
