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

fn malformed(what: &str) -> NormalizeError {
    NormalizeError::Malformed(what.to_owned())
}

/// Reads a varint from the front of `bytes`.
pub(super) fn varint(bytes: &mut &[u8]) -> Result<u64, NormalizeError> {
    // Most varints of a profile (field keys, small ids) are one byte.
    if let Some((&b, rest)) = bytes.split_first() {
        if b & 0x80 == 0 {
            *bytes = rest;
            return Ok(u64::from(b));
        }
    }
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes
            .split_first()
            .ok_or_else(|| malformed("a varint runs past the end"))?;
        *bytes = rest;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err(malformed("a varint is longer than 10 bytes"))
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
    type Item = Result<(u32, Value<'a>), NormalizeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        Some(self.field())
    }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<(u32, Value<'a>), NormalizeError> {
        let key = varint(&mut self.rest)?;
        let number =
            u32::try_from(key >> 3).map_err(|_| malformed("a field number is out of range"))?;
        if number == 0 {
            return Err(malformed("field number 0"));
        }
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut self.rest)?),
            1 => {
                let (b, rest) = self
                    .rest
                    .split_first_chunk::<8>()
                    .ok_or_else(|| malformed("a fixed64 runs past the end"))?;
                self.rest = rest;
                Value::Fixed64(u64::from_le_bytes(*b))
            }
            2 => {
                let len = usize::try_from(varint(&mut self.rest)?)
                    .map_err(|_| malformed("a length is out of range"))?;
                if len > self.rest.len() {
                    return Err(malformed("a length-delimited field runs past the end"));
                }
                let (b, rest) = self.rest.split_at(len);
                self.rest = rest;
                Value::Bytes(b)
            }
            5 => {
                let (b, rest) = self
                    .rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| malformed("a fixed32 runs past the end"))?;
                self.rest = rest;
                Value::Fixed32(u32::from_le_bytes(*b))
            }
            other => return Err(NormalizeError::Malformed(format!("wire type {other}"))),
        };
        Ok((number, value))
    }
}

impl<'a> Value<'a> {
    /// An integer field (varint; fixed forms accepted as protobuf does for scalars).
    pub(super) fn int(self, field: &'static str) -> Result<u64, NormalizeError> {
        match self {
            Value::Varint(n) | Value::Fixed64(n) => Ok(n),
            Value::Fixed32(n) => Ok(u64::from(n)),
            Value::Bytes(_) => Err(NormalizeError::Malformed(format!(
                "{field} is length-delimited, not a number"
            ))),
        }
    }

    /// A length-delimited field: string, bytes or message.
    pub(super) fn bytes(self, field: &'static str) -> Result<&'a [u8], NormalizeError> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(NormalizeError::Malformed(format!(
                "{field} is a number, not length-delimited"
            ))),
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
        assert!(Fields::new(&[0x00]).next().unwrap().is_err());
    }
}
