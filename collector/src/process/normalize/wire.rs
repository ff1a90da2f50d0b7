//! Just enough of the protobuf wire format to walk a message field by field without
//! building it: the decoders read each field where it lies, keep strings as slices of
//! the input, and allocate only what they keep, after counting it against the limits.

use super::NormalizeError;

/// A field's value as the wire carries it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2: a string, bytes, a nested message or a packed repeated field.
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

/// What is wrong with a message at the wire level. It is one byte, so that the readers
/// of every field return their result in registers; it becomes a
/// [`NormalizeError::Malformed`] where a decoder gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum WireError {
    #[error("a varint runs past the end")]
    VarintPastEnd,
    #[error("a varint is longer than 10 bytes")]
    VarintTooLong,
    #[error("a field number is out of range")]
    FieldNumber,
    #[error("field number 0")]
    FieldZero,
    #[error("a length is out of range")]
    Length,
    #[error("a length-delimited field runs past the end")]
    BytesPastEnd,
    #[error("a fixed64 runs past the end")]
    Fixed64PastEnd,
    #[error("a fixed32 runs past the end")]
    Fixed32PastEnd,
    #[error("wire type {0}")]
    WireType(u8),
}

impl From<WireError> for NormalizeError {
    #[cold]
    fn from(e: WireError) -> Self {
        NormalizeError::Malformed(e.to_string())
    }
}

/// Reads a varint from the front of `bytes`.
#[inline]
pub(super) fn varint(bytes: &mut &[u8]) -> Result<u64, WireError> {
    // Most varints of a profile (field keys, small ids) are one byte.
    if let Some((&b, rest)) = bytes.split_first() {
        if b & 0x80 == 0 {
            *bytes = rest;
            return Ok(u64::from(b));
        }
    }
    varint_long(bytes)
}

/// A varint of two bytes or more (or a truncated one).
fn varint_long(bytes: &mut &[u8]) -> Result<u64, WireError> {
    let mut n = 0u64;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Ok(n);
        }
    }
    Err(if bytes.len() >= 10 {
        WireError::VarintTooLong
    } else {
        WireError::VarintPastEnd
    })
}

/// The fields of one message, in order.
pub(super) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(super) fn new(message: &'a [u8]) -> Self {
        Fields { rest: message }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        Some(self.field())
    }
}

impl<'a> Fields<'a> {
    #[inline]
    fn field(&mut self) -> Result<(u32, Value<'a>), WireError> {
        let key = varint(&mut self.rest)?;
        let number = u32::try_from(key >> 3).map_err(|_| WireError::FieldNumber)?;
        if number == 0 {
            return Err(WireError::FieldZero);
        }
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut self.rest)?),
            1 => {
                let (b, rest) = self
                    .rest
                    .split_first_chunk::<8>()
                    .ok_or(WireError::Fixed64PastEnd)?;
                self.rest = rest;
                Value::Fixed64(u64::from_le_bytes(*b))
            }
            2 => {
                let len =
                    usize::try_from(varint(&mut self.rest)?).map_err(|_| WireError::Length)?;
                if len > self.rest.len() {
                    return Err(WireError::BytesPastEnd);
                }
                let (b, rest) = self.rest.split_at(len);
                self.rest = rest;
                Value::Bytes(b)
            }
            5 => {
                let (b, rest) = self
                    .rest
                    .split_first_chunk::<4>()
                    .ok_or(WireError::Fixed32PastEnd)?;
                self.rest = rest;
                Value::Fixed32(u32::from_le_bytes(*b))
            }
            other => return Err(WireError::WireType(other as u8)),
        };
        Ok((number, value))
    }
}

/// A field of the wrong wire type.
#[cold]
fn not_a(field: &str, is: &str) -> NormalizeError {
    NormalizeError::Malformed(format!("{field} is {is}"))
}

impl<'a> Value<'a> {
    /// An integer field (varint; fixed forms accepted as protobuf does for scalars).
    #[inline]
    pub(super) fn int(self, field: &'static str) -> Result<u64, NormalizeError> {
        match self {
            Value::Varint(n) | Value::Fixed64(n) => Ok(n),
            Value::Fixed32(n) => Ok(u64::from(n)),
            Value::Bytes(_) => Err(not_a(field, "length-delimited, not a number")),
        }
    }

    /// A length-delimited field: string, bytes or message.
    #[inline]
    pub(super) fn bytes(self, field: &'static str) -> Result<&'a [u8], NormalizeError> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(not_a(field, "a number, not length-delimited")),
        }
    }

    /// A UTF-8 string field.
    pub(super) fn str(self, field: &'static str) -> Result<&'a str, NormalizeError> {
        std::str::from_utf8(self.bytes(field)?)
            .map_err(|_| NormalizeError::Malformed(format!("{field} is not UTF-8")))
    }

    /// The elements of a repeated integer field: one unpacked element, or a packed run,
    /// handed to `each`.
    pub(super) fn ints(
        self,
        field: &'static str,
        mut each: impl FnMut(u64) -> Result<(), NormalizeError>,
    ) -> Result<(), NormalizeError> {
        match self {
            Value::Bytes(mut packed) => {
                while !packed.is_empty() {
                    each(varint(&mut packed)?)?;
                }
                Ok(())
            }
            other => each(other.int(field)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_truncations() {
        // field 1 varint 150, field 2 "hi", field 3 packed [1, 300], field 5 fixed32.
        let msg = [
            0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i', 0x1a, 0x03, 0x01, 0xac, 0x02, 0x2d, 1, 0, 0,
            0,
        ];
        let fields: Vec<(u32, Value<'_>)> = Fields::new(&msg).collect::<Result<_, _>>().unwrap();
        assert_eq!(fields.len(), 4);
        assert_eq!(fields[0].1.int("a").unwrap(), 150);
        assert_eq!(fields[1].1.str("b").unwrap(), "hi");
        let mut packed = Vec::new();
        fields[2]
            .1
            .ints("c", |v| {
                packed.push(v);
                Ok(())
            })
            .unwrap();
        assert_eq!(packed, vec![1, 300]);
        assert_eq!(fields[3].1.int("d").unwrap(), 1);
        for cut in 1..msg.len() {
            let ends_cleanly = [3, 7, 12].contains(&cut);
            let result: Result<Vec<_>, _> = Fields::new(&msg[..cut]).collect();
            assert_eq!(result.is_ok(), ends_cleanly, "cut at {cut}");
        }
        assert!(Fields::new(&[0x0b]).next().unwrap().is_err());
        // The longest varint is 10 bytes: u64::MAX.
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(varint(&mut &max[..]), Ok(u64::MAX));
        let mut rest = &[0xac, 0x02, 0x07][..];
        assert_eq!(varint(&mut rest), Ok(300));
        assert_eq!(rest, [0x07]);
        assert_eq!(varint(&mut &[0x80; 11][..]), Err(WireError::VarintTooLong));
        assert_eq!(varint(&mut &[0x80; 9][..]), Err(WireError::VarintPastEnd));
        assert_eq!(
            NormalizeError::from(WireError::VarintPastEnd).to_string(),
            "not a valid profile: a varint runs past the end"
        );
        assert!(Fields::new(&[0x00]).next().unwrap().is_err());
    }
}
