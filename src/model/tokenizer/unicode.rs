//! Codepoint classes as llama.cpp's pre-tokenizers see them, and GPT-2's
//! byte-to-unicode mapping.
//!
//! llama.cpp classifies codepoints with tables generated from Unicode 15.1's
//! UnicodeData.txt: one general-category class per codepoint (\p{L}, \p{N},
//! ...), plus a White_Space bit. We take the categories from
//! `unicode-general-category` (Unicode 15.0) and add the 627 codepoints that
//! 15.1 assigned, so that unassigned-in-15.1 codepoints stay "undefined" as
//! they are for llama.cpp. A test checks the whole table against a digest of
//! llama.cpp's.

use unicode_general_category::{get_general_category, GeneralCategory as G};

/// The class bits of one codepoint, laid out like llama.cpp's
/// `unicode_cpt_flags` so that the two are easy to compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CpFlags(pub u16);

impl CpFlags {
    pub const UNDEFINED: u16 = 0x0001;
    pub const NUMBER: u16 = 0x0002;
    pub const LETTER: u16 = 0x0004;
    pub const SEPARATOR: u16 = 0x0008;
    pub const MARK: u16 = 0x0010;
    pub const PUNCTUATION: u16 = 0x0020;
    pub const SYMBOL: u16 = 0x0040;
    pub const CONTROL: u16 = 0x0080;
    pub const CATEGORIES: u16 = 0x00FF;
    pub const WHITESPACE: u16 = 0x0100;

    /// Flags of a position outside the text being split: no class at all.
    pub const NONE: CpFlags = CpFlags(0);

    #[inline]
    pub fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    #[inline]
    pub fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    #[inline]
    pub fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
    #[inline]
    pub fn is_mark(self) -> bool {
        self.0 & Self::MARK != 0
    }
    #[inline]
    pub fn is_punctuation(self) -> bool {
        self.0 & Self::PUNCTUATION != 0
    }
    #[inline]
    pub fn is_symbol(self) -> bool {
        self.0 & Self::SYMBOL != 0
    }
    /// True for every codepoint inside the text (each has some class).
    #[inline]
    pub fn is_some(self) -> bool {
        self.0 != 0
    }
    #[inline]
    pub fn category(self) -> u16 {
        self.0 & Self::CATEGORIES
    }
}

/// Unicode's White_Space property: the set llama.cpp treats as `\s`.
fn is_white_space(cp: u32) -> bool {
    matches!(
        cp,
        0x09..=0x0D
            | 0x20
            | 0x85
            | 0xA0
            | 0x1680
            | 0x2000..=0x200A
            | 0x2028
            | 0x2029
            | 0x202F
            | 0x205F
            | 0x3000
    )
}

/// Codepoints that Unicode 15.1 assigned on top of 15.0.
fn category_15_1(cp: u32) -> Option<u16> {
    match cp {
        // Ideographic description characters and a CJK stroke (So).
        0x2FFC..=0x2FFF | 0x31EF => Some(CpFlags::SYMBOL),
        // CJK Unified Ideographs Extension I (Lo).
        0x2EBF0..=0x2EE5D => Some(CpFlags::LETTER),
        _ => None,
    }
}

fn category_flag(c: char) -> u16 {
    match get_general_category(c) {
        G::Unassigned => category_15_1(c as u32).unwrap_or(CpFlags::UNDEFINED),
        G::Control | G::Format | G::PrivateUse | G::Surrogate => CpFlags::CONTROL,
        G::LowercaseLetter
        | G::ModifierLetter
        | G::OtherLetter
        | G::TitlecaseLetter
        | G::UppercaseLetter => CpFlags::LETTER,
        G::SpacingMark | G::EnclosingMark | G::NonspacingMark => CpFlags::MARK,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => CpFlags::NUMBER,
        G::ConnectorPunctuation
        | G::DashPunctuation
        | G::ClosePunctuation
        | G::FinalPunctuation
        | G::InitialPunctuation
        | G::OtherPunctuation
        | G::OpenPunctuation => CpFlags::PUNCTUATION,
        G::CurrencySymbol | G::ModifierSymbol | G::MathSymbol | G::OtherSymbol => CpFlags::SYMBOL,
        G::LineSeparator | G::ParagraphSeparator | G::SpaceSeparator => CpFlags::SEPARATOR,
    }
}

/// ASCII flags, computed once: most text is ASCII and this is the hot path
/// of every pre-tokenizer.
static ASCII_FLAGS: std::sync::LazyLock<[CpFlags; 128]> = std::sync::LazyLock::new(|| {
    let mut t = [CpFlags::NONE; 128];
    for (i, f) in t.iter_mut().enumerate() {
        *f = slow_flags(char::from(i as u8));
    }
    t
});

fn slow_flags(c: char) -> CpFlags {
    let mut f = category_flag(c);
    if is_white_space(c as u32) {
        f |= CpFlags::WHITESPACE;
    }
    CpFlags(f)
}

/// Classes of one codepoint.
#[inline]
pub fn flags(c: char) -> CpFlags {
    if c.is_ascii() {
        ASCII_FLAGS[c as usize]
    } else {
        slow_flags(c)
    }
}

/// GPT-2's reversible byte-to-unicode mapping: printable Latin-1 bytes map
/// to themselves, the other 68 bytes to U+0100.. in byte order.
pub fn byte_to_char(b: u8) -> char {
    BYTE_TO_CHAR[b as usize]
}

/// The inverse of [`byte_to_char`].
pub fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 256 && is_printable_latin1(cp as u8) {
        return Some(cp as u8);
    }
    if (256..256 + 68).contains(&cp) {
        return Some(NON_PRINTABLE[(cp - 256) as usize]);
    }
    None
}

fn is_printable_latin1(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

static BYTE_TO_CHAR: std::sync::LazyLock<[char; 256]> = std::sync::LazyLock::new(|| {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        t[b as usize] = if is_printable_latin1(b) {
            char::from(b)
        } else {
            let c = char::from_u32(256 + n).expect("U+0100..U+0143 are chars");
            n += 1;
            c
        };
    }
    t
});

/// The bytes that are not printable Latin-1, in order: `U+0100 + i` stands
/// for `NON_PRINTABLE[i]`.
static NON_PRINTABLE: std::sync::LazyLock<[u8; 68]> = std::sync::LazyLock::new(|| {
    let mut t = [0u8; 68];
    let mut n = 0;
    for b in 0..=255u8 {
        if !is_printable_latin1(b) {
            t[n] = b;
            n += 1;
        }
    }
    t
});

impl std::ops::BitOr<u16> for CpFlags {
    type Output = CpFlags;
    fn bitor(self, rhs: u16) -> CpFlags {
        CpFlags(self.0 | rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_classes() {
        assert!(flags('a').is_letter());
        assert!(flags('Z').is_letter());
        assert!(flags('7').is_number());
        assert!(flags(' ').is_whitespace());
        assert_eq!(flags(' ').category(), CpFlags::SEPARATOR);
        assert!(flags('\n').is_whitespace());
        assert_eq!(flags('\n').category(), CpFlags::CONTROL);
        assert_eq!(flags('$').category(), CpFlags::SYMBOL);
        assert_eq!(flags('_').category(), CpFlags::PUNCTUATION);
        assert_eq!(flags('\'').category(), CpFlags::PUNCTUATION);
    }

    #[test]
    fn non_ascii_classes() {
        assert!(flags('é').is_letter());
        assert!(flags('中').is_letter());
        assert!(flags('٣').is_number()); // Arabic-Indic digit
        assert!(flags('Ⅻ').is_number()); // letter number
        assert!(flags('\u{0301}').is_mark());
        assert!(flags('—').is_punctuation());
        assert!(flags('🚀').is_symbol());
        assert!(flags('\u{00A0}').is_whitespace());
        assert!(flags('\u{3000}').is_whitespace());
        assert!(!flags('\u{200B}').is_whitespace()); // zero width space is Cf
        assert_eq!(flags('\u{200D}').category(), CpFlags::CONTROL);
        assert_eq!(flags('\u{E000}').category(), CpFlags::CONTROL); // private use
                                                                    // Unicode 15.1 additions are assigned; 16.0's are not (yet).
        assert!(flags('\u{2EBF0}').is_letter());
        assert_eq!(flags('\u{2FFC}').category(), CpFlags::SYMBOL);
        assert_eq!(flags('\u{1C89}').category(), CpFlags::UNDEFINED);
        assert_eq!(flags('\u{10FFFF}').category(), CpFlags::UNDEFINED);
    }

    /// SHA-256 of llama.cpp's class table (category bits and White_Space,
    /// u16 little-endian per codepoint, surrogates left out), computed from
    /// the unicode-data.cpp of the llama.cpp our parity reference comes from.
    const LLAMA_CPP_TABLE_SHA256: &str =
        "41f13eb1c863502344b7a228ff176cda6d13ce2255425a63d446b7340d750d6a";

    #[test]
    fn whole_table_matches_llama_cpp() {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for cp in 0..0x110000u32 {
            if let Some(c) = char::from_u32(cp) {
                h.update(flags(c).0.to_le_bytes());
            }
        }
        assert_eq!(hex::encode(h.finalize()), LLAMA_CPP_TABLE_SHA256);
    }

    #[test]
    fn byte_mapping_round_trips() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(0xAD), '\u{0143}');
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_to_char(b);
            assert!(seen.insert(c));
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(char_to_byte('€'), None);
        assert_eq!(char_to_byte('\u{0144}'), None);
    }
}
