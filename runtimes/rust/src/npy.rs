//! A reader for the .npy files h2l writes: little-endian float32 (`<f4`) or int64 (`<i8`, the routed
//! teacher's `top_heads`), C order, format 1.0/2.0/3.0.  Parses from bytes, so a bundle's golden files
//! are read from the bytes whose sha256 was checked.

use std::path::Path;

use crate::error::{Error, Result};

/// A parsed array: its shape and row-major data.
#[derive(Debug, Clone, PartialEq)]
pub struct Array<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

/// Returns (shape, data) of a `<f4` file; anything else is an error naming the file.
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.into(), source })?;
    let a = parse_f32(&bytes, &path.display().to_string())?;
    Ok((a.shape, a.data))
}

/// Parse a `<f4` array; `name` only labels errors.
pub fn parse_f32(bytes: &[u8], name: &str) -> Result<Array<f32>> {
    let (shape, body) = parse(bytes, name, "<f4")?;
    Ok(Array { shape, data: body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect() })
}

/// Parse a `<i8` (int64) array; `name` only labels errors.
pub fn parse_i64(bytes: &[u8], name: &str) -> Result<Array<i64>> {
    let (shape, body) = parse(bytes, name, "<i8")?;
    Ok(Array { shape, data: body.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect() })
}

/// The value of `'key': ` in a .npy header dict, up to the next top-level comma or brace.
fn field<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let start = header.find(&format!("'{key}':"))? + key.len() + 3;
    let rest = header[start..].trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}'])? };
    Some(rest[..end].trim())
}

fn parse<'b>(bytes: &'b [u8], name: &str, descr: &str) -> Result<(Vec<usize>, &'b [u8])> {
    let bad = |why: &str| Error::Npy { path: name.to_string(), reason: why.to_string() };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file"));
    }
    let (hlen, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Err(bad("unsupported .npy version")),
    };
    let end = start.checked_add(hlen).filter(|&e| e <= bytes.len()).ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| bad("header is not text"))?;
    let found = field(header, "descr").ok_or_else(|| bad("header has no descr"))?;
    if found.trim_matches('\'') != descr {
        return Err(bad(&format!("dtype is {found}, expected '{descr}'")));
    }
    if field(header, "fortran_order") != Some("False") {
        return Err(bad("only C-order arrays are supported (fortran_order must be False)"));
    }
    let shape = field(header, "shape").ok_or_else(|| bad("header has no shape"))?;
    let shape = shape
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad(&format!("bad shape entry {s:?}"))))
        .collect::<Result<Vec<_>>>()?;
    let width = if descr == "<i8" { 8 } else { 4 };
    let want = shape
        .iter()
        .try_fold(width, |acc: usize, &n| acc.checked_mul(n))
        .ok_or_else(|| bad("shape overflows"))?;
    let body = &bytes[end..];
    if body.len() != want {
        return Err(bad(&format!("data is {} bytes, its shape {shape:?} needs {want} (truncated?)", body.len())));
    }
    Ok((shape, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A .npy file as numpy's `np.save` writes it (format 1.0, header padded to 64 bytes, '\n' last).
    pub(crate) fn npy(descr: &str, shape: &[usize], body: &[u8]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn float32_round_trip() {
        let vals = [1.5f32, -2.0, 0.0, 3.25, f32::MIN_POSITIVE, 7.0];
        let body: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = parse_f32(&npy("<f4", &[2, 3], &body), "x.npy").unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vals);
    }

    #[test]
    fn int64_top_heads() {
        let vals = [0i64, 9, -1, i64::MAX, 3, 1 << 40];
        let body: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = parse_i64(&npy("<i8", &[3, 2], &body), "top_heads.npy").unwrap();
        assert_eq!((a.shape, a.data), (vec![3, 2], vals.to_vec()));
    }

    #[test]
    fn one_dimensional_and_scalar_shapes() {
        let a = parse_f32(&npy("<f4", &[2], &[0, 0, 128, 63, 0, 0, 0, 64]), "v").unwrap();
        assert_eq!((a.shape, a.data), (vec![2], vec![1.0, 2.0]));
        let s = parse_f32(&npy("<f4", &[], &1.0f32.to_le_bytes()), "s").unwrap();
        assert_eq!((s.shape, s.data), (vec![], vec![1.0]));
    }

    #[test]
    fn refusals_name_the_problem() {
        let f4 = npy("<f4", &[2, 2], &[0u8; 16]);
        let err = |r: Result<Array<f32>>| r.unwrap_err().to_string();
        assert!(err(parse_f32(&f4[..f4.len() - 1], "t.npy")).contains("truncated"));
        assert!(err(parse_f32(b"PK\x03\x04 not numpy", "t.npy")).contains("not a .npy"));
        assert!(err(parse_f32(&f4[..20], "t.npy")).contains("truncated header"));
        assert!(parse_i64(&f4, "t.npy").unwrap_err().to_string().contains("expected '<i8'"));
        assert!(err(parse_f32(&npy(">f4", &[1], &[0; 4]), "t.npy")).contains("'>f4'"));
        assert!(err(parse_f32(&npy("<f8", &[1], &[0; 8]), "t.npy")).contains("expected '<f4'"));
        let mut fortran = f4.clone();
        let at = fortran.windows(5).position(|w| w == b"False").unwrap();
        fortran[at..at + 5].copy_from_slice(b"True ");
        assert!(err(parse_f32(&fortran, "t.npy")).contains("C-order"));
        let huge = npy("<f4", &[usize::MAX, 2], &[]);
        assert!(err(parse_f32(&huge, "t.npy")).contains("overflows"));
        assert!(err(parse_f32(&npy("<f4", &[2, 2], &[0u8; 20]), "t.npy")).contains("needs 16"));
    }
}
