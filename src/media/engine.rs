//! The media engine: every call's outgoing RTP stream, paced by one clock.
//!
//! The runtime calls [`MediaEngine::tick`] about every 20 ms with the current time; each stream
//! works out from its own epoch how many frames are due, so a late tick is caught up (up to a
//! bound) instead of drifting, and no call has a timer of its own. The engine does no I/O: the
//! packets go out through the `send` callback, with the stream's transmit handle `T`.

use super::prompts::{PromptId, PromptStore};
use super::{Codec, FRAME_MS, FRAME_SAMPLES};
use rtp_rs::{RtpPacketBuilder, Seq};
use slab::Slab;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most this many frames are sent in one tick to catch up; older ones are skipped (their
/// time still advances), because a burst longer than that only fills the peer's jitter buffer.
const MAX_CATCH_UP: u64 = 3;

/// A stream: its slot and the generation of that slot, so an id kept after its stream ended
/// (a late event, a second remove) never reaches the next stream in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    slot: usize,
    generation: u64,
}

/// What the engine tells call control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// The playlist of this stream has played to its end.
    PlaybackDone(StreamId),
}

#[derive(Debug, Clone, Copy)]
pub struct StreamParams {
    pub codec: Codec,
    pub payload_type: u8,
    pub ssrc: u32,
    pub first_seq: u16,
    pub first_ts: u32,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct StreamStats {
    pub packets_sent: u64,
    /// Frames skipped because the engine ran too late to send them.
    pub frames_skipped: u64,
}

struct Stream<T> {
    generation: u64,
    tx: T,
    remote: Option<SocketAddr>,
    params: StreamParams,
    seq: u16,
    ts: u32,
    epoch: Instant,
    frames_done: u64,
    playlist: Vec<PromptId>,
    item: usize,
    frame: usize,
    loop_last: bool,
    playing: bool,
    sending: bool,
    marker: bool,
    stats: StreamStats,
}

pub struct MediaEngine<T> {
    prompts: Arc<PromptStore>,
    streams: Slab<Stream<T>>,
    events: std::collections::VecDeque<MediaEvent>,
    next_gen: u64,
}

impl<T> MediaEngine<T> {
    pub fn new(prompts: Arc<PromptStore>) -> Self {
        MediaEngine {
            prompts,
            streams: Slab::new(),
            events: std::collections::VecDeque::new(),
            next_gen: 0,
        }
    }

    pub fn prompts(&self) -> &Arc<PromptStore> {
        &self.prompts
    }

    /// Starts a stream that sends silence until something is played.
    pub fn add(
        &mut self,
        now: Instant,
        tx: T,
        remote: Option<SocketAddr>,
        params: StreamParams,
    ) -> StreamId {
        self.next_gen += 1;
        let generation = self.next_gen;
        let slot = self.streams.insert(Stream {
            generation,
            tx,
            remote,
            params,
            seq: params.first_seq,
            ts: params.first_ts,
            epoch: now,
            frames_done: 0,
            playlist: Vec::new(),
            item: 0,
            frame: 0,
            loop_last: false,
            playing: false,
            sending: true,
            marker: true,
            stats: StreamStats::default(),
        });
        StreamId { slot, generation }
    }

    pub fn remove(&mut self, id: StreamId) -> Option<(T, StreamStats)> {
        self.stream(id)?;
        self.streams.try_remove(id.slot).map(|s| (s.tx, s.stats))
    }

    fn stream(&self, id: StreamId) -> Option<&Stream<T>> {
        self.streams
            .get(id.slot)
            .filter(|s| s.generation == id.generation)
    }

    fn stream_mut(&mut self, id: StreamId) -> Option<&mut Stream<T>> {
        self.streams
            .get_mut(id.slot)
            .filter(|s| s.generation == id.generation)
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    pub fn codec(&self, id: StreamId) -> Option<Codec> {
        self.stream(id).map(|s| s.params.codec)
    }

    pub fn payload_type(&self, id: StreamId) -> Option<u8> {
        self.stream(id).map(|s| s.params.payload_type)
    }

    pub fn tx(&self, id: StreamId) -> Option<&T> {
        self.stream(id).map(|s| &s.tx)
    }

    pub fn stats(&self, id: StreamId) -> Option<StreamStats> {
        self.stream(id).map(|s| s.stats)
    }

    /// Replaces what the stream plays. With `loop_last`, the last prompt repeats until the
    /// next `play` or `stop` (hold music); otherwise `PlaybackDone` follows the last frame.
    pub fn play(&mut self, id: StreamId, prompts: &[PromptId], loop_last: bool) {
        if let Some(s) = self.stream_mut(id) {
            s.playlist.clear();
            s.playlist.extend_from_slice(prompts);
            s.item = 0;
            s.frame = 0;
            s.loop_last = loop_last;
            s.playing = !prompts.is_empty();
            if !s.playing {
                self.events.push_back(MediaEvent::PlaybackDone(id));
            }
        }
    }

    /// Stops playback without an event: the stream carries silence.
    pub fn stop(&mut self, id: StreamId) {
        if let Some(s) = self.stream_mut(id) {
            s.playing = false;
            s.playlist.clear();
        }
    }

    pub fn is_playing(&self, id: StreamId) -> bool {
        self.stream(id).is_some_and(|s| s.playing)
    }

    pub fn set_remote(&mut self, id: StreamId, remote: Option<SocketAddr>) {
        if let Some(s) = self.stream_mut(id) {
            s.remote = remote;
        }
    }

    pub fn remote(&self, id: StreamId) -> Option<SocketAddr> {
        self.stream(id).and_then(|s| s.remote)
    }

    /// Hold (peer sent `sendonly`/`inactive`): time goes on, nothing is sent.
    pub fn set_sending(&mut self, id: StreamId, sending: bool) {
        if let Some(s) = self.stream_mut(id) {
            if sending && !s.sending {
                s.marker = true;
            }
            s.sending = sending;
        }
    }

    pub fn set_codec(&mut self, id: StreamId, codec: Codec, payload_type: u8) {
        if let Some(s) = self.stream_mut(id) {
            s.params.codec = codec;
            s.params.payload_type = payload_type;
        }
    }

    /// The earliest time a frame is due on any stream is the next 20 ms boundary; callers tick
    /// on a fixed 20 ms interval, so this is only a hint for tests.
    pub fn frame_interval() -> Duration {
        Duration::from_millis(FRAME_MS)
    }

    /// Sends every frame that is due at `now`.
    pub fn tick(&mut self, now: Instant, mut send: impl FnMut(&T, &[u8], SocketAddr)) {
        let prompts = &*self.prompts;
        let mut buf = [0u8; 12 + FRAME_SAMPLES];
        for (key, s) in self.streams.iter_mut() {
            let elapsed = now.saturating_duration_since(s.epoch).as_millis() as u64;
            let due = elapsed / FRAME_MS + 1;
            if due <= s.frames_done {
                continue;
            }
            let mut lag = due - s.frames_done;
            if lag > MAX_CATCH_UP {
                let skip = lag - MAX_CATCH_UP;
                for _ in 0..skip {
                    if advance(s, prompts) {
                        self.events.push_back(MediaEvent::PlaybackDone(StreamId {
                            slot: key,
                            generation: s.generation,
                        }));
                    }
                }
                s.ts = s.ts.wrapping_add((skip as u32) * FRAME_SAMPLES as u32);
                s.frames_done += skip;
                s.stats.frames_skipped += skip;
                s.marker = true;
                lag = MAX_CATCH_UP;
            }
            for _ in 0..lag {
                let codec = s.params.codec;
                let silence = [codec.silence(); FRAME_SAMPLES];
                let payload: &[u8] = if s.playing {
                    let p = prompts.get(s.playlist[s.item]);
                    p.frame(codec, s.frame)
                } else {
                    &silence
                };
                if let (true, Some(remote)) = (s.sending, s.remote) {
                    let n = RtpPacketBuilder::new()
                        .payload_type(s.params.payload_type)
                        .ssrc(s.params.ssrc)
                        .sequence(Seq::from(s.seq))
                        .timestamp(s.ts)
                        .marked(s.marker)
                        .payload(payload)
                        .build_into(&mut buf);
                    if let Ok(n) = n {
                        send(&s.tx, &buf[..n], remote);
                        s.seq = s.seq.wrapping_add(1);
                        s.marker = false;
                        s.stats.packets_sent += 1;
                    }
                }
                if advance(s, prompts) {
                    self.events.push_back(MediaEvent::PlaybackDone(StreamId {
                        slot: key,
                        generation: s.generation,
                    }));
                }
                s.ts = s.ts.wrapping_add(FRAME_SAMPLES as u32);
                s.frames_done += 1;
            }
        }
    }

    /// Events produced since the last call (playback finished).
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }
}

/// Moves the playback cursor one frame on; true when the playlist just ended.
fn advance<T>(s: &mut Stream<T>, prompts: &PromptStore) -> bool {
    if !s.playing {
        return false;
    }
    s.frame += 1;
    if s.frame >= prompts.get(s.playlist[s.item]).frames() {
        s.frame = 0;
        if s.item + 1 < s.playlist.len() {
            s.item += 1;
        } else if s.loop_last {
            // stay on the last item: it repeats
        } else {
            s.playing = false;
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> (MediaEngine<u8>, PromptId, PromptId) {
        let mut store = PromptStore::default();
        let a = store.insert("a", &vec![1000i16; FRAME_SAMPLES * 3]);
        let b = store.insert("b", &vec![-1000i16; FRAME_SAMPLES * 2]);
        (MediaEngine::new(Arc::new(store)), a, b)
    }

    fn params() -> StreamParams {
        StreamParams {
            codec: Codec::Pcmu,
            payload_type: 0,
            ssrc: 7,
            first_seq: 65534,
            first_ts: 10,
        }
    }

    #[test]
    fn an_ended_stream_id_never_reaches_the_next_stream_in_its_slot() {
        let (mut e, a, _) = engine();
        let t0 = Instant::now();
        let old = e.add(t0, 1u8, None, params());
        assert!(e.remove(old).is_some());
        let new = e.add(t0, 2u8, None, params());
        assert_ne!(old, new);
        // A second remove or a play through the old id (a call hung up, then finished)
        // leaves the new stream alone.
        assert!(e.remove(old).is_none());
        e.play(old, &[a], false);
        assert!(!e.is_playing(new));
        assert_eq!(e.tx(new), Some(&2));
        assert_eq!(e.tx(old), None);
    }

    #[test]
    fn paces_by_time_with_continuous_seq_and_ts_and_reports_end_once() {
        let (mut e, a, b) = engine();
        let t0 = Instant::now();
        let remote: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let id = e.add(t0, 1u8, Some(remote), params());
        e.play(id, &[a, b], false);
        let mut sent: Vec<Vec<u8>> = vec![];
        for ms in (0..=200).step_by(20) {
            e.tick(t0 + Duration::from_millis(ms), |_, p, _| {
                sent.push(p.to_vec())
            });
        }
        assert_eq!(sent.len(), 11);
        for (i, p) in sent.iter().enumerate() {
            let r = rtp_rs::RtpReader::new(p).unwrap();
            assert_eq!(
                u16::from(r.sequence_number()),
                65534u16.wrapping_add(i as u16)
            );
            assert_eq!(r.timestamp(), 10 + 160 * i as u32);
            assert_eq!(r.mark(), i == 0);
            let expect = if i < 3 {
                crate::media::g711::ulaw_encode(1000)
            } else if i < 5 {
                crate::media::g711::ulaw_encode(-1000)
            } else {
                0xFF
            };
            assert!(r.payload().iter().all(|&x| x == expect), "frame {i}");
        }
        assert_eq!(e.poll_event(), Some(MediaEvent::PlaybackDone(id)));
        assert_eq!(e.poll_event(), None);
    }

    #[test]
    fn a_late_tick_catches_up_a_bounded_burst_and_keeps_time() {
        let (mut e, a, _) = engine();
        let t0 = Instant::now();
        let id = e.add(t0, 1u8, Some("127.0.0.1:4000".parse().unwrap()), params());
        e.play(id, &[a], true);
        let mut sent = vec![];
        e.tick(t0, |_, p, _| sent.push(p.to_vec()));
        e.tick(t0 + Duration::from_millis(200), |_, p, _| {
            sent.push(p.to_vec())
        });
        assert_eq!(sent.len(), 1 + 3);
        let last = rtp_rs::RtpReader::new(sent.last().unwrap()).unwrap();
        assert_eq!(
            last.timestamp(),
            10 + 160 * 10,
            "timestamp follows the clock, not the packet count"
        );
        assert_eq!(e.stats(id).unwrap().frames_skipped, 7);
        assert_eq!(e.poll_event(), None, "a looping playlist never ends");
    }

    #[test]
    fn hold_sends_nothing_and_resume_sets_marker() {
        let (mut e, a, _) = engine();
        let t0 = Instant::now();
        let id = e.add(t0, 1u8, Some("127.0.0.1:4000".parse().unwrap()), params());
        e.play(id, &[a], true);
        let mut n = 0;
        e.tick(t0, |_, _, _| n += 1);
        e.set_sending(id, false);
        e.tick(t0 + Duration::from_millis(20), |_, _, _| n += 1);
        assert_eq!(n, 1);
        e.set_sending(id, true);
        let mut marks = vec![];
        e.tick(t0 + Duration::from_millis(40), |_, p, _| {
            marks.push(rtp_rs::RtpReader::new(p).unwrap().mark())
        });
        assert_eq!(marks, vec![true]);
    }
}
