//! The index attributes as text, keyed by keyword: exactly what Python's
//! `dicomvault.attributes.decode_attrs` makes of the parser's [`Attr`]s, for the character sets
//! nearly every object uses (the default repertoire, ISO_IR 100, ISO_IR 192).
//!
//! Why here: decoding them in Python cost ~30 µs per object on the ingest path (a pydicom call
//! per text value), a third of the Python an ingested object costs. Anything this module does
//! not decode exactly as Python would (ISO 2022 code extensions, other character sets, invalid
//! UTF-8, a tag without a keyword) gives `None`, and the caller takes the Python path, so the
//! index holds the same strings whichever path decoded them.

use crate::parse::{dictionary_vr, Attr};

/// The DICOM keyword of an index tag (as pydicom's `keyword_for_tag`), None for other tags.
pub fn keyword(tag: u32) -> Option<&'static str> {
    Some(match tag {
        0x0008_0005 => "SpecificCharacterSet",
        0x0008_0008 => "ImageType",
        0x0008_0012 => "InstanceCreationDate",
        0x0008_0013 => "InstanceCreationTime",
        0x0008_0016 => "SOPClassUID",
        0x0008_0018 => "SOPInstanceUID",
        0x0008_0020 => "StudyDate",
        0x0008_0021 => "SeriesDate",
        0x0008_0022 => "AcquisitionDate",
        0x0008_0023 => "ContentDate",
        0x0008_0030 => "StudyTime",
        0x0008_0031 => "SeriesTime",
        0x0008_0032 => "AcquisitionTime",
        0x0008_0033 => "ContentTime",
        0x0008_0050 => "AccessionNumber",
        0x0008_0060 => "Modality",
        0x0008_0070 => "Manufacturer",
        0x0008_0080 => "InstitutionName",
        0x0008_0090 => "ReferringPhysicianName",
        0x0008_1010 => "StationName",
        0x0008_1030 => "StudyDescription",
        0x0008_103E => "SeriesDescription",
        0x0008_1090 => "ManufacturerModelName",
        0x0010_0010 => "PatientName",
        0x0010_0020 => "PatientID",
        0x0010_0021 => "IssuerOfPatientID",
        0x0010_0030 => "PatientBirthDate",
        0x0010_0040 => "PatientSex",
        0x0010_1010 => "PatientAge",
        0x0018_0015 => "BodyPartExamined",
        0x0020_000D => "StudyInstanceUID",
        0x0020_000E => "SeriesInstanceUID",
        0x0020_0010 => "StudyID",
        0x0020_0011 => "SeriesNumber",
        0x0020_0013 => "InstanceNumber",
        0x0028_0002 => "SamplesPerPixel",
        0x0028_0004 => "PhotometricInterpretation",
        0x0028_0008 => "NumberOfFrames",
        0x0028_0010 => "Rows",
        0x0028_0011 => "Columns",
        0x0028_0100 => "BitsAllocated",
        0x0028_0101 => "BitsStored",
        0x0028_0103 => "PixelRepresentation",
        0x0040_0244 => "PerformedProcedureStepStartDate",
        0x0040_0245 => "PerformedProcedureStepStartTime",
        _ => return None,
    })
}

const SPECIFIC_CHARACTER_SET: u32 = 0x0008_0005;
const ESC: u8 = 0x1B;

/// How the text VRs of one data set are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    /// No (0008,0005), the default repertoire or ISO_IR 100: pydicom decodes both as latin-1.
    Latin1,
    /// ISO_IR 192.
    Utf8,
}

/// The data set's character set, None when it is one this module leaves to pydicom.
fn charset(attrs: &[Attr]) -> Option<Charset> {
    let Some(a) = attrs.iter().find(|a| a.tag == SPECIFIC_CHARACTER_SET) else {
        return Some(Charset::Latin1);
    };
    if a.value.contains(&b'\\') || !a.value.is_ascii() {
        return None; // code extensions, or a name Python would decode with replacements
    }
    // Python strips a name's whitespace (str.strip: the ASCII ones are these).
    let space = |c: &u8| matches!(c, b' ' | b'\t'..=b'\r' | 0x1C..=0x1F);
    let start = a.value.iter().position(|c| !space(c)).unwrap_or(a.value.len());
    let end = a.value.iter().rposition(|c| !space(c)).map_or(start, |i| i + 1);
    match &a.value[start..end] {
        b"" | b"ISO_IR 6" | b"ISO_IR 100" => Some(Charset::Latin1),
        b"ISO_IR 192" => Some(Charset::Utf8),
        _ => None,
    }
}

/// Text of a VR whose value depends on the character set, trailing spaces and NULs removed.
fn charset_text(value: &[u8], cs: Charset) -> Option<String> {
    if value.contains(&ESC) {
        return None; // pydicom switches character sets at escape sequences
    }
    let end = value.iter().rposition(|&c| c != b' ' && c != 0).map_or(0, |i| i + 1);
    let value = &value[..end];
    match cs {
        Charset::Latin1 => Some(value.iter().map(|&c| char::from(c)).collect()),
        // Invalid UTF-8 is decoded with replacements and a warning by pydicom: left to it.
        Charset::Utf8 => std::str::from_utf8(value).ok().map(str::to_owned),
    }
}

/// Any other VR: Python's `value.decode("ascii", "replace").strip(" \x00")`.
fn ascii_text(value: &[u8]) -> String {
    let pad = |c: &u8| *c == b' ' || *c == 0;
    let start = value.iter().position(|c| !pad(c)).unwrap_or(value.len());
    let end = value.iter().rposition(|c| !pad(c)).map_or(start, |i| i + 1);
    value[start..end].iter().map(|&c| if c.is_ascii() { char::from(c) } else { '\u{FFFD}' }).collect()
}

/// Binary integers (little endian, as the parser hands them out) as decimal, joined by `\`.
fn int_text(value: &[u8], width: usize, signed: bool) -> String {
    let mut out = String::new();
    for (i, chunk) in value.chunks_exact(width).enumerate() {
        if i > 0 {
            out.push('\\');
        }
        let mut le = [0u8; 8];
        le[..width].copy_from_slice(chunk);
        let n = u64::from_le_bytes(le);
        if signed {
            let shift = 64 - 8 * width as u32;
            out.push_str(&(((n << shift) as i64) >> shift).to_string());
        } else {
            out.push_str(&n.to_string());
        }
    }
    out
}

/// One attribute's text (None: leave the data set to the Python path).
fn text(a: &Attr, cs: Charset) -> Option<String> {
    let vr = if a.vr == *b"UN" { dictionary_vr(a.tag)? } else { a.vr };
    Some(match &vr {
        b"US" => int_text(&a.value, 2, false),
        b"UL" => int_text(&a.value, 4, false),
        b"UV" => int_text(&a.value, 8, false),
        b"SS" => int_text(&a.value, 2, true),
        b"SL" => int_text(&a.value, 4, true),
        b"SV" => int_text(&a.value, 8, true),
        b"PN" | b"LO" | b"SH" | b"LT" | b"ST" | b"UT" | b"UC" => charset_text(&a.value, cs)?,
        _ => ascii_text(&a.value),
    })
}

/// (tag, text) of each attribute in order, or None when any of them needs the Python path
/// (the keys are the tags' [`keyword`]s, every one of which exists). A tag given twice keeps
/// its place and takes its last value there, as a Python dict would.
pub fn decode_index_attrs(attrs: &[Attr]) -> Option<Vec<(u32, String)>> {
    let cs = charset(attrs)?;
    attrs.iter().map(|a| Some((keyword(a.tag).map(|_| a.tag)?, text(a, cs)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::INDEX_TAGS;

    fn attr(tag: u32, vr: &[u8; 2], value: &[u8]) -> Attr {
        Attr { tag, vr: *vr, value: value.to_vec() }
    }

    fn decode(attrs: &[Attr]) -> Option<Vec<(&'static str, String)>> {
        decode_index_attrs(attrs).map(|v| v.into_iter().map(|(t, s)| (keyword(t).unwrap(), s)).collect())
    }

    #[test]
    fn every_index_tag_has_a_keyword() {
        for &t in INDEX_TAGS {
            assert!(keyword(t).is_some(), "{t:08X}");
        }
        assert_eq!(keyword(0x7FE0_0010), None);
    }

    #[test]
    fn default_repertoire_is_latin1_and_padding_goes() {
        let got = decode(&[
            attr(0x0010_0010, b"PN", b"M\xfcller^Hans  \0"),
            attr(0x0008_0018, b"UI", b"\0 1.2.3 \0"),
            attr(0x0008_0060, b"CS", b"CT\xff"),
        ])
        .unwrap();
        assert_eq!(got[0], ("PatientName", "Müller^Hans".to_owned()));
        assert_eq!(got[1], ("SOPInstanceUID", "1.2.3".to_owned()));
        assert_eq!(got[2], ("Modality", "CT\u{FFFD}".to_owned()));
    }

    #[test]
    fn charsets() {
        let cs = |v: &[u8]| attr(SPECIFIC_CHARACTER_SET, b"CS", v);
        let name = attr(0x0010_0010, b"PN", "Müller".as_bytes());
        let got = decode(&[cs(b"ISO_IR 192"), name.clone()]).unwrap();
        assert_eq!(got[1].1, "Müller");
        let got = decode(&[cs(b" ISO_IR 100 "), attr(0x0010_0010, b"PN", b"M\xfcller")]).unwrap();
        assert_eq!(got[0].1, "ISO_IR 100"); // the value itself is a CS: stripped of spaces
        assert_eq!(got[1].1, "Müller");
        assert!(decode(&[cs(b"")]).is_some());
        assert!(decode(&[cs(b"ISO_IR 192"), attr(0x0010_0010, b"PN", b"M\xfcller")]).is_none());
        assert!(decode(&[cs(b"\\ISO 2022 IR 87"), name.clone()]).is_none());
        assert!(decode(&[cs(b"ISO_IR 144"), name.clone()]).is_none());
        assert!(decode(&[attr(0x0010_0010, b"PN", b"A\x1b(BB")]).is_none());
    }

    #[test]
    fn integers() {
        let got = decode(&[
            attr(0x0028_0010, b"US", &[0x00, 0x02, 0x01, 0x00, 0xFF]),
            attr(0x0028_0103, b"SS", &[0xFF, 0xFF]),
            attr(0x0028_0011, b"SL", &[0xFE, 0xFF, 0xFF, 0xFF]),
            attr(0x0028_0100, b"UV", &u64::MAX.to_le_bytes()),
            attr(0x0028_0101, b"US", &[]),
        ])
        .unwrap();
        let texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, ["512\\1", "-1", "-2", "18446744073709551615", ""]);
    }

    #[test]
    fn unknown_tag_or_vr_goes_to_python() {
        assert!(decode(&[attr(0x0009_0010, b"LO", b"x")]).is_none());
        assert_eq!(decode(&[attr(0x0028_0010, b"UN", &[2, 0])]).unwrap()[0].1, "2");
    }
}
