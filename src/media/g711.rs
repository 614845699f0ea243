//! G.711 μ-law and A-law (ITU-T G.711), sample by sample.

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
}
