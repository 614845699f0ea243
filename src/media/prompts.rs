//! Prompts: 8 kHz 16-bit mono WAV files, read once at start-up and kept as G.711 frames in both
//! laws, so playing a prompt is a slice copy per packet.

use super::{Codec, FRAME_SAMPLES, g711};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("prompt folder {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Index of a prompt in the [`PromptStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PromptId(pub u32);

pub struct Prompt {
    pub name: String,
    ulaw: Vec<u8>,
    alaw: Vec<u8>,
}

impl Prompt {
    pub fn frames(&self) -> usize {
        self.ulaw.len() / FRAME_SAMPLES
    }
    /// Frame `i` (20 ms) in `codec`; `i` must be below `frames()`.
    pub fn frame(&self, codec: Codec, i: usize) -> &[u8] {
        let data = match codec {
            Codec::Pcmu => &self.ulaw,
            Codec::Pcma => &self.alaw,
        };
        &data[i * FRAME_SAMPLES..(i + 1) * FRAME_SAMPLES]
    }
    pub fn duration_ms(&self) -> u64 {
        self.frames() as u64 * super::FRAME_MS
    }
}

#[derive(Default)]
pub struct PromptStore {
    prompts: Vec<Prompt>,
    by_name: HashMap<String, PromptId>,
}

impl PromptStore {
    /// Loads every `*.wav` below `dir`; a prompt's name is its path below `dir` without `.wav`
    /// (e.g. `digits/1`). Returns the store and every file that could not be used.
    pub fn load_dir(dir: &Path) -> Result<(PromptStore, Vec<PromptError>), PromptError> {
        let mut files = Vec::new();
        collect_wavs(dir, &mut files).map_err(|source| PromptError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        files.sort();
        let mut store = PromptStore::default();
        let mut problems = Vec::new();
        for path in files {
            let name = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .with_extension("")
                .to_string_lossy()
                .replace('\\', "/");
            match read_wav(&path) {
                Ok(pcm) => {
                    store.insert(&name, &pcm);
                }
                Err(reason) => problems.push(PromptError::File { path, reason }),
            }
        }
        Ok((store, problems))
    }

    /// Adds a prompt from PCM samples, padding the last frame with silence.
    pub fn insert(&mut self, name: &str, pcm: &[i16]) -> PromptId {
        let frames = pcm.len().div_ceil(FRAME_SAMPLES).max(1);
        let mut ulaw = vec![Codec::Pcmu.silence(); frames * FRAME_SAMPLES];
        let mut alaw = vec![Codec::Pcma.silence(); frames * FRAME_SAMPLES];
        for (i, &s) in pcm.iter().enumerate() {
            ulaw[i] = g711::ulaw_encode(s);
            alaw[i] = g711::alaw_encode(s);
        }
        let id = PromptId(self.prompts.len() as u32);
        self.prompts.push(Prompt {
            name: name.to_string(),
            ulaw,
            alaw,
        });
        self.by_name.insert(name.to_string(), id);
        id
    }

    pub fn id(&self, name: &str) -> Option<PromptId> {
        self.by_name.get(name).copied()
    }
    pub fn get(&self, id: PromptId) -> &Prompt {
        &self.prompts[id.0 as usize]
    }
    pub fn len(&self) -> usize {
        self.prompts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }
    pub fn total_bytes(&self) -> usize {
        self.prompts
            .iter()
            .map(|p| p.ulaw.len() + p.alaw.len())
            .sum()
    }
}

fn collect_wavs(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_wavs(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("wav"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads an 8 kHz 16-bit mono PCM WAV; anything else is refused with the reason, because
/// resampling at start-up would hide a wrongly converted recording.
pub fn read_wav(path: &Path) -> Result<Vec<i16>, String> {
    let mut reader =
        hound::WavReader::open(path).map_err(|e| format!("not a readable WAV: {e}"))?;
    let spec = reader.spec();
    if spec.sample_rate != 8000
        || spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(format!(
            "must be 8000 Hz 16-bit mono PCM, is {} Hz {}-bit {} channel(s) {:?} \
             (convert with: sox in.wav -r 8000 -c 1 -b 16 out.wav)",
            spec.sample_rate, spec.bits_per_sample, spec.channels, spec.sample_format
        ));
    }
    let samples: Result<Vec<i16>, _> = reader.samples::<i16>().collect();
    let samples = samples.map_err(|e| format!("corrupt WAV data: {e}"))?;
    if samples.is_empty() {
        return Err("holds no audio".into());
    }
    Ok(samples)
}
