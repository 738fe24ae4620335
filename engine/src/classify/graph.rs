//! An ONNX graph file (protobuf) read just far enough to find its initializers: name, element
//! type, shape and raw bytes, borrowed from the file's bytes. The adapter uses it to find the
//! numbers the graph shares with a lexical head, so that they are held once (ADR 0025).
//!
//! Only `ModelProto.graph` (field 7) → `GraphProto.initializer` (field 5) → `TensorProto`
//! `dims` (1), `data_type` (2), `name` (8) and `raw_data` (9) are read; every other field is
//! skipped by its wire type. The bytes come from a verified model file, yet a malformed file
//! is an error, never a panic or an unbounded allocation: lengths are checked against the
//! bytes that are there, and nothing is copied.

/// `TensorProto.DataType.FLOAT16`.
pub const FLOAT16: i32 = 10;

/// One initializer of the graph, its data borrowed from the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initializer<'a> {
    pub name: &'a str,
    /// `TensorProto.DataType` (e.g. [`FLOAT16`]).
    pub data_type: i32,
    pub dims: Vec<i64>,
    /// The little-endian values, when the file stores them as `raw_data` (empty when it
    /// uses the typed fields or external data).
    pub raw: &'a [u8],
}

/// Why the bytes are not a graph this reader understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an ONNX graph: {reason} at byte {at}")]
pub struct Error {
    pub reason: &'static str,
    pub at: usize,
}

/// The protobuf wire types this reader meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

/// One field of a message: its number and its value.
#[derive(Debug)]
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed-width value, not read further.
    Fixed,
}

/// Reads the fields of one message in order.
struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Where `bytes` starts in the whole file, for the error's position.
    base: usize,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Fields<'a> {
        Fields {
            bytes,
            pos: 0,
            base,
        }
    }

    fn error(&self, reason: &'static str) -> Error {
        Error {
            reason,
            at: self.base + self.pos,
        }
    }

    fn varint(&mut self) -> Result<u64, Error> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.pos)
                .ok_or_else(|| self.error("a number runs past the end"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("a number is longer than ten bytes"))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.error("a field runs past the end"))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    /// The next field, its number and where its value starts in the file.
    fn next_field(&mut self) -> Option<Result<(u64, usize, Value<'a>), Error>> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        Some(self.field())
    }

    fn field(&mut self) -> Result<(u64, usize, Value<'a>), Error> {
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint,
            1 => Wire::Fixed64,
            2 => Wire::Len,
            5 => Wire::Fixed32,
            _ => return Err(self.error("unknown wire type")),
        };
        let start = self.base + self.pos;
        let value = match wire {
            Wire::Varint => Value::Varint(self.varint()?),
            Wire::Fixed64 => {
                self.take(8)?;
                Value::Fixed
            }
            Wire::Fixed32 => {
                self.take(4)?;
                Value::Fixed
            }
            Wire::Len => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| self.error("a length does not fit this machine"))?;
                let start = self.base + self.pos;
                return Ok((key >> 3, start, Value::Bytes(self.take(len)?)));
            }
        };
        Ok((key >> 3, start, value))
    }
}

/// Every initializer of the graph in `model` (the bytes of a `.onnx` file), in file order.
pub fn initializers(model: &[u8]) -> Result<Vec<Initializer<'_>>, Error> {
    let mut found = Vec::new();
    let mut top = Fields::new(model, 0);
    while let Some(field) = top.next_field() {
        let (number, start, value) = field?;
        let (7, Value::Bytes(graph)) = (number, value) else {
            continue;
        };
        let mut fields = Fields::new(graph, start);
        while let Some(field) = fields.next_field() {
            let (number, start, value) = field?;
            if let (5, Value::Bytes(tensor)) = (number, value) {
                found.push(initializer(tensor, start)?);
            }
        }
    }
    Ok(found)
}

fn initializer(tensor: &[u8], base: usize) -> Result<Initializer<'_>, Error> {
    let mut out = Initializer {
        name: "",
        data_type: 0,
        dims: Vec::new(),
        raw: &[],
    };
    let mut fields = Fields::new(tensor, base);
    while let Some(field) = fields.next_field() {
        match field? {
            (1, _, Value::Varint(d)) => out.dims.push(d as i64),
            (1, start, Value::Bytes(packed)) => {
                let mut dims = Fields::new(packed, start);
                while dims.pos < packed.len() {
                    out.dims.push(dims.varint()? as i64);
                }
            }
            (2, _, Value::Varint(t)) => {
                out.data_type = i32::try_from(t).map_err(|_| fields.error("unknown data type"))?
            }
            (8, _, Value::Bytes(name)) => {
                out.name =
                    std::str::from_utf8(name).map_err(|_| fields.error("a name is not UTF-8"))?
            }
            (9, _, Value::Bytes(raw)) => out.raw = raw,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn len_field(number: u64, body: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    /// A model with one graph holding `tensors` (name, type, dims, raw bytes), around fields
    /// of every wire type that the reader must skip.
    fn model(tensors: &[(&str, i32, &[i64], &[u8])], packed_dims: bool) -> Vec<u8> {
        let mut graph = Vec::new();
        len_field(1, b"node bytes are skipped", &mut graph);
        for (name, data_type, dims, raw) in tensors {
            let mut t = Vec::new();
            if packed_dims {
                let mut p = Vec::new();
                dims.iter().for_each(|&d| varint(d as u64, &mut p));
                len_field(1, &p, &mut t);
            } else {
                for &d in *dims {
                    varint(1 << 3, &mut t);
                    varint(d as u64, &mut t);
                }
            }
            varint(2 << 3, &mut t);
            varint(*data_type as u64, &mut t);
            len_field(8, name.as_bytes(), &mut t);
            len_field(9, raw, &mut t);
            len_field(5, &t, &mut graph);
        }
        let mut out = Vec::new();
        varint(1 << 3, &mut out); // ir_version
        varint(10, &mut out);
        varint(3 << 3 | 1, &mut out); // a fixed64 field
        out.extend_from_slice(&[0; 8]);
        varint(4 << 3 | 5, &mut out); // a fixed32 field
        out.extend_from_slice(&[0; 4]);
        len_field(7, &graph, &mut out);
        out
    }

    #[test]
    fn finds_names_types_shapes_and_raw_bytes() {
        for packed in [false, true] {
            let bytes = model(
                &[
                    (
                        "w",
                        FLOAT16,
                        &[3, 2],
                        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
                    ),
                    ("b", 1, &[300], &[0; 4]),
                ],
                packed,
            );
            let found = initializers(&bytes).expect("a graph");
            assert_eq!(found.len(), 2);
            assert_eq!(found[0].name, "w");
            assert_eq!(found[0].data_type, FLOAT16);
            assert_eq!(found[0].dims, [3, 2]);
            assert_eq!(found[0].raw.len(), 12);
            assert_eq!(found[1].dims, [300], "a dimension of two varint bytes");
        }
    }

    #[test]
    fn a_cut_or_garbled_file_is_an_error_that_says_where() {
        let bytes = model(&[("w", FLOAT16, &[3, 2], &[0; 12])], false);
        for cut in [bytes.len() - 1, bytes.len() - 13, 3] {
            let err = initializers(&bytes[..cut]).expect_err("cut");
            assert!(err.at <= cut, "{err} for a file of {cut} bytes");
            assert!(err.to_string().starts_with("not an ONNX graph: "), "{err}");
        }
        let err = initializers(&[0x0f]).expect_err("wire type 7");
        assert_eq!(err.reason, "unknown wire type");
        let mut endless = vec![0x08];
        endless.extend([0xff; 11]);
        let err = initializers(&endless).expect_err("endless varint");
        assert!(err.reason.contains("number"), "{err}");
        // a length far beyond the file is refused, not allocated
        let mut huge = Vec::new();
        varint(7 << 3 | 2, &mut huge);
        varint(u64::MAX >> 1, &mut huge);
        assert_eq!(
            initializers(&huge).expect_err("huge").reason,
            "a field runs past the end"
        );
    }

    proptest! {
        #[test]
        fn any_bytes_give_an_answer_and_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = initializers(&bytes);
        }

        #[test]
        fn a_flipped_byte_never_panics(flip in 0usize..64, to in any::<u8>()) {
            let mut bytes = model(&[("w", FLOAT16, &[3, 2], &[0; 12])], true);
            let at = flip % bytes.len();
            bytes[at] = to;
            if let Ok(found) = initializers(&bytes) {
                prop_assert!(found.iter().all(|i| i.raw.len() <= bytes.len()));
            }
        }
    }
}
