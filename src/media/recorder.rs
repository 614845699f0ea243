//! Call recording: bridged calls of queues with `record = true` are written to stereo WAV
//! (8 kHz, 16-bit; caller left, seat right) by one writer thread, so the RTP readers only hand
//! over the payloads they relay and never touch a disk.
//!
//! The two sides arrive as separate packet streams. Samples are written once both sides have
//! them; a side that has sent nothing for 200 ms (muted, on hold, silence suppression) is
//! filled with silence so the other side's audio is not held back or lost.

use super::Codec;
use std::collections::{HashMap, VecDeque};
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::mpsc;

/// How far one side may run ahead before the other is padded with silence.
const MAX_SKEW: usize = 1600;

// Audio is the common message; keeping its payload inline spares an allocation per packet.
#[allow(clippy::large_enum_variant)]
pub enum Message {
    Start {
        id: u64,
        path: PathBuf,
    },
    /// One packet's payload from `side` (0 = caller, 1 = seat).
    Audio {
        id: u64,
        side: u8,
        codec: Codec,
        len: u8,
        payload: [u8; 240],
    },
    Stop {
        id: u64,
    },
    /// Close every open recording and end the thread.
    Shutdown,
}

/// Where the RTP readers send what they relay; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Message>,
}

/// One side of one recording, as an RTP reader holds it.
#[derive(Clone)]
pub struct Tap {
    pub recorder: Recorder,
    pub id: u64,
    pub side: u8,
}

impl Tap {
    /// Hands over a relayed packet's audio (at most 30 ms of G.711; longer packets are cut).
    pub fn audio(&self, codec: Codec, payload: &[u8]) {
        self.audio_as(self.side, codec, payload)
    }

    /// The same for the other `side` of this recording: in a three-way call the seat side
    /// is what the caller hears, the conference's mix for it.
    pub fn audio_as(&self, side: u8, codec: Codec, payload: &[u8]) {
        let len = payload.len().min(240);
        let mut buf = [0u8; 240];
        buf[..len].copy_from_slice(&payload[..len]);
        let _ = self.recorder.tx.send(Message::Audio {
            id: self.id,
            side,
            codec,
            len: len as u8,
            payload: buf,
        });
    }
}

struct Recording {
    writer: hound::WavWriter<BufWriter<std::fs::File>>,
    sides: [VecDeque<i16>; 2],
    path: PathBuf,
}

impl Recording {
    fn write_ready(&mut self) -> hound::Result<()> {
        // Pad a side that has fallen silent, then write what both sides have.
        let (l, r) = (self.sides[0].len(), self.sides[1].len());
        if l > r + MAX_SKEW {
            self.sides[1].extend(std::iter::repeat_n(0, l - r));
        } else if r > l + MAX_SKEW {
            self.sides[0].extend(std::iter::repeat_n(0, r - l));
        }
        let n = self.sides[0].len().min(self.sides[1].len());
        for _ in 0..n {
            let (a, b) = (
                self.sides[0].pop_front().unwrap_or(0),
                self.sides[1].pop_front().unwrap_or(0),
            );
            self.writer.write_sample(a)?;
            self.writer.write_sample(b)?;
        }
        Ok(())
    }

    fn finish(mut self) -> hound::Result<()> {
        let (l, r) = (self.sides[0].len(), self.sides[1].len());
        let short = if l < r { 0 } else { 1 };
        self.sides[short].extend(std::iter::repeat_n(0, l.abs_diff(r)));
        self.write_ready()?;
        self.writer.finalize()
    }
}

impl Recorder {
    /// Starts the writer thread; join the handle after sending `Shutdown`.
    pub fn start() -> std::io::Result<(Recorder, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel::<Message>();
        let handle = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || run(rx))?;
        Ok((Recorder { tx }, handle))
    }

    pub fn send(&self, m: Message) {
        let _ = self.tx.send(m);
    }
}

fn run(rx: mpsc::Receiver<Message>) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut open: HashMap<u64, Recording> = HashMap::new();
    while let Ok(m) = rx.recv() {
        match m {
            Message::Start { id, path } => {
                let made = path
                    .parent()
                    .map(std::fs::create_dir_all)
                    .transpose()
                    .map_err(hound::Error::IoError)
                    .and_then(|_| hound::WavWriter::create(&path, spec));
                match made {
                    Ok(writer) => {
                        open.insert(
                            id,
                            Recording {
                                writer,
                                sides: Default::default(),
                                path,
                            },
                        );
                    }
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "cannot record the call")
                    }
                }
            }
            Message::Audio {
                id,
                side,
                codec,
                len,
                payload,
            } => {
                let Some(rec) = open.get_mut(&id) else {
                    continue;
                };
                let side = usize::from(side.min(1));
                rec.sides[side]
                    .extend(payload[..usize::from(len)].iter().map(|&b| codec.decode(b)));
                if let Err(e) = rec.write_ready() {
                    tracing::error!(path = %rec.path.display(), error = %e, "recording write failed; recording stopped");
                    open.remove(&id);
                }
            }
            Message::Stop { id } => {
                if let Some(rec) = open.remove(&id) {
                    let path = rec.path.clone();
                    match rec.finish() {
                        Ok(()) => tracing::info!(path = %path.display(), "call recorded"),
                        Err(e) => {
                            tracing::error!(path = %path.display(), error = %e, "recording could not be finished")
                        }
                    }
                }
            }
            Message::Shutdown => break,
        }
    }
    // The daemon is stopping: close what is open so the files are valid WAV.
    for (_, rec) in open.drain() {
        let _ = rec.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_interleave_and_a_silent_side_is_padded() {
        let dir = std::env::temp_dir().join(format!("hotline-rec-{}", std::process::id()));
        let path = dir.join("x.wav");
        let (r, handle) = Recorder::start().unwrap();
        r.send(Message::Start {
            id: 1,
            path: path.clone(),
        });
        let caller = Tap {
            recorder: r.clone(),
            id: 1,
            side: 0,
        };
        let seat = Tap {
            recorder: r.clone(),
            id: 1,
            side: 1,
        };
        let loud = [super::super::g711::ulaw_encode(8000); 160];
        for _ in 0..5 {
            caller.audio(Codec::Pcmu, &loud);
            seat.audio(Codec::Pcmu, &[Codec::Pcmu.silence(); 160]);
        }
        // The seat goes quiet (on hold): 20 caller packets still make it to the file.
        for _ in 0..20 {
            caller.audio(Codec::Pcmu, &loud);
        }
        r.send(Message::Stop { id: 1 });
        r.send(Message::Shutdown);
        handle.join().unwrap();
        drop((r, caller, seat));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let samples = loop {
            if let Ok(mut rd) = hound::WavReader::open(&path) {
                let s: Vec<i16> = rd.samples::<i16>().map(|s| s.unwrap()).collect();
                if s.len() == 25 * 160 * 2 {
                    break s;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "recording not written"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(samples.chunks(2).all(|f| f[0] > 7000 && f[1].abs() < 10));
        let _ = std::fs::remove_dir_all(dir);
    }
}
