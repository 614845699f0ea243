//! G.711 μ-law and A-law (ITU-T G.711): sample by sample, and whole frames through tables
//! for the mixer, which decodes and re-encodes every member's audio every 20 ms.

use std::sync::LazyLock;

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

pub fn ulaw_encode(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    if s > ULAW_CLIP {
        s = ULAW_CLIP;
    }
    s += ULAW_BIAS;
    // s >= 0x84, so its highest set bit is 7..=14 and the exponent 0..=7.
    let exponent = (31 - (s as u32).leading_zeros()) as i32 - 7;
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

pub fn ulaw_decode(byte: u8) -> i16 {
    let b = !byte as i32;
    let sign = b & 0x80;
    let exponent = (b >> 4) & 0x07;
    let mantissa = b & 0x0F;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

pub fn alaw_encode(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s >= 0 { 0x80 } else { 0 };
    if s < 0 {
        s = -s - 1;
    }
    if s > 32767 {
        s = 32767;
    }
    let byte = if s < 256 {
        (s >> 4) as u8
    } else {
        let exponent = (31 - (s as u32).leading_zeros()) as i32 - 7; // 1..=7
        let mantissa = (s >> (exponent + 3)) & 0x0F;
        ((exponent << 4) | mantissa) as u8
    };
    (byte | sign) ^ 0x55
}

pub fn alaw_decode(byte: u8) -> i16 {
    let b = (byte ^ 0x55) as i32;
    let sign = b & 0x80;
    let exponent = (b >> 4) & 0x07;
    let mantissa = b & 0x0F;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if sign != 0 { magnitude } else { -magnitude }) as i16
}

/// Decoding: one 256-entry table per law.
static ULAW_DEC: LazyLock<[i16; 256]> =
    LazyLock::new(|| std::array::from_fn(|b| ulaw_decode(b as u8)));
static ALAW_DEC: LazyLock<[i16; 256]> =
    LazyLock::new(|| std::array::from_fn(|b| alaw_decode(b as u8)));
/// Encoding: one entry per 16-bit sample (64 KiB per law, built on first use), so a sample
/// costs one load instead of the bit search; exactly the per-sample functions' result.
static ULAW_ENC: LazyLock<Box<[u8]>> =
    LazyLock::new(|| (0..=u16::MAX).map(|i| ulaw_encode(i as i16)).collect());
static ALAW_ENC: LazyLock<Box<[u8]>> =
    LazyLock::new(|| (0..=u16::MAX).map(|i| alaw_encode(i as i16)).collect());

/// `bytes` decoded into `out` (as many samples as both hold); `alaw` picks the law.
pub fn decode_frame(alaw: bool, bytes: &[u8], out: &mut [i16]) {
    let t = if alaw { &*ALAW_DEC } else { &*ULAW_DEC };
    for (s, &b) in out.iter_mut().zip(bytes) {
        *s = t[usize::from(b)];
    }
}

/// Sums (clipped to 16 bits) encoded into `out`.
pub fn encode_frame(alaw: bool, sums: &[i32], out: &mut [u8]) {
    let t: &[u8] = if alaw { &ALAW_ENC } else { &ULAW_ENC };
    for (b, &s) in out.iter_mut().zip(sums) {
        let s = s.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        *b = t[usize::from(s as u16)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_round_trip_is_close() {
        for s in (-32768i32..=32767).step_by(7) {
            let s = s as i16;
            let back = ulaw_decode(ulaw_encode(s)) as i32;
            let err = (back - s as i32).abs();
            // μ-law step size grows with magnitude: at most 1/16 of the value plus the bias.
            assert!(err <= (s as i32).abs() / 16 + 140, "{s} -> {back}");
        }
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_decode(0xFF), 0);
    }

    #[test]
    fn alaw_round_trip_is_close() {
        for s in (-32768i32..=32767).step_by(7) {
            let s = s as i16;
            let back = alaw_decode(alaw_encode(s)) as i32;
            let err = (back - s as i32).abs();
            assert!(err <= (s as i32).abs() / 16 + 20, "{s} -> {back}");
        }
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_decode(0xD5).abs(), 8);
    }

    #[test]
    fn frame_tables_match_the_per_sample_codecs() {
        let sums: Vec<i32> = (-40000..40000).step_by(3).collect();
        for alaw in [false, true] {
            let mut enc = vec![0u8; sums.len()];
            encode_frame(alaw, &sums, &mut enc);
            for (&s, &b) in sums.iter().zip(&enc) {
                let s = s.clamp(-32768, 32767) as i16;
                assert_eq!(b, if alaw { alaw_encode(s) } else { ulaw_encode(s) }, "{s}");
            }
            let bytes: Vec<u8> = (0..=255).collect();
            let mut dec = vec![0i16; 256];
            decode_frame(alaw, &bytes, &mut dec);
            for (&b, &s) in bytes.iter().zip(&dec) {
                assert_eq!(s, if alaw { alaw_decode(b) } else { ulaw_decode(b) });
            }
        }
    }
}
