//! BPE pre-tokenization: split text into words before merges, exactly as
//! llama.cpp's `unicode_regex_split` does for the pre-tokenizer that
//! `tokenizer.ggml.pre` names.
//!
//! llama.cpp applies a list of regexes in turn; each one refines the current
//! partition of the text (matches and the text between them both become
//! pieces, and later regexes see one piece at a time, never across pieces).
//! Four regexes have hand-written splitters there (GPT-2's, Llama 3's,
//! Qwen 2's and Qwen 3.5's), which differ from a true regex engine in small
//! ways; we port their logic. Every other regex runs on a "collapsed" copy
//! of the text where each non-ASCII codepoint stands in for its Unicode
//! class, with `\p{..}` rewritten to match those stand-ins; we do the same
//! with `fancy-regex` (for look-ahead) instead of std::regex.

use std::ops::Range;

use fancy_regex::Regex;

use super::unicode::{flags, CpFlags};

/// llama.cpp's regex strings, verbatim (see `llm_tokenizer_bpe` in
/// llama-vocab.cpp).
mod re {
    pub const GPT2: &str =
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
    pub const LLAMA3: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    pub const QWEN2: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    pub const QWEN35: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    pub const DEEPSEEK3_MAIN: &str = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";
    pub const CJK_KANA: &str = "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+";
    pub const CJK_HANGUL: &str = "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+";
    pub const BLOOM: &str = " ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+";
}

/// What a `tokenizer.ggml.pre` value means to llama.cpp: its regexes and
/// the vocabulary flags it sets.
#[derive(Debug, Clone)]
pub struct PreSpec {
    pub regexes: &'static [&'static str],
    /// Look the whole word up before merging (llama3 and a few others).
    pub ignore_merges: bool,
    /// `clean_up_tokenization_spaces` in detokenize.
    pub clean_spaces: bool,
    /// Overrides the BPE default of add_bos = false (before metadata).
    pub add_bos: bool,
    /// The model has no BOS by default (chatglm).
    pub no_bos: bool,
}

/// The pre-tokenizer that llama.cpp selects for `name`, or None when we do
/// not support it (llama.cpp refuses unknown names too). An empty name is
/// llama.cpp's "default" (with a warning there).
pub fn pre_spec(name: &str) -> Option<PreSpec> {
    const DEFAULT: &[&str] = &[
        "[\\p{P}\\$\\+<=>\\^~\\|]+",
        re::GPT2,
        "\\p{N}+",
        "[0-9][0-9][0-9]",
    ];
    const LLAMA3: &[&str] = &[re::LLAMA3];
    const QWEN2: &[&str] = &[re::QWEN2];
    const QWEN35: &[&str] = &[re::QWEN35];
    const GPT2: &[&str] = &[re::GPT2];
    const STARCODER: &[&str] = &["\\p{N}", re::GPT2];
    const FALCON: &[&str] = &["[\\p{P}\\$\\+<=>\\^~\\|`]+", re::GPT2, "[0-9][0-9][0-9]"];
    const DEEPSEEK_LLM: &[&str] = &[
        "[\r\n]",
        "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+",
        "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
        "\\s+$",
        re::CJK_HANGUL,
        "\\p{N}+",
    ];
    const DEEPSEEK_CODER: &[&str] = &[
        "[\r\n]",
        "\\s?\\p{L}+",
        "\\s?\\p{P}+",
        re::CJK_HANGUL,
        "\\p{N}",
    ];
    const DEEPSEEK3: &[&str] = &["\\p{N}{1,3}", re::CJK_KANA, re::DEEPSEEK3_MAIN];
    const BLOOM: &[&str] = &[re::BLOOM];
    const VIKING: &[&str] = &[re::BLOOM, "\\p{N}"];
    const SEED_CODER: &[&str] = &["(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"];
    const BAILINGMOE: &[&str] = &["'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"];
    const UFAKZEKA: &[&str] = &["[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"];
    const MINICPM5: &[&str] = &["\\p{N}{1,3}", "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"];

    let spec = |regexes, ignore_merges, clean_spaces, add_bos, no_bos| PreSpec {
        regexes,
        ignore_merges,
        clean_spaces,
        add_bos,
        no_bos,
    };
    // (regexes, ignore_merges, clean_spaces, add_bos, no_bos), per
    // llama_vocab::impl::load.
    Some(match name {
        "" | "default" => spec(DEFAULT, false, true, false, false),
        "minicpm5" => spec(MINICPM5, true, true, false, false),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => spec(LLAMA3, true, true, true, false),
        "deepseek-llm" => spec(DEEPSEEK_LLM, false, false, false, false),
        "deepseek-coder" => spec(DEEPSEEK_CODER, false, false, false, false),
        "deepseek-v3" | "hunyuan-dense" | "hy_v4" | "joyai-llm" => {
            spec(DEEPSEEK3, false, false, false, false)
        }
        "falcon" => spec(FALCON, false, true, false, false),
        "mpt" | "olmo" | "jais" | "exaone4" | "gpt-2" | "phi-2" | "jina-es" | "jina-de"
        | "gigachat" | "jina-v2-es" | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" => {
            spec(GPT2, false, true, false, false)
        }
        "trillion" | "granite-docling" => spec(GPT2, false, false, false, false),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            spec(STARCODER, false, true, false, false)
        }
        "smollm" | "command-r" => spec(STARCODER, false, false, false, false),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open"
        | "grok-2" => spec(QWEN2, false, false, false, false),
        "stablelm2" | "megrez" => spec(QWEN2, false, true, false, false),
        "qwen35" => spec(QWEN35, false, false, false, false),
        "dbrx" | "smaug-bpe" => spec(LLAMA3, false, true, false, false),
        "chatglm-bpe" => spec(LLAMA3, false, true, false, true),
        "glm4" | "glm5" => spec(LLAMA3, true, true, false, true),
        "poro-chat" => spec(BLOOM, false, false, false, false),
        "bloom" | "gpt3-finnish" => spec(BLOOM, false, true, false, false),
        "viking" => spec(VIKING, false, false, false, false),
        "seed-coder" => spec(SEED_CODER, false, false, false, false),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => spec(BAILINGMOE, false, false, false, false),
        "ufakzeka" => spec(UFAKZEKA, false, false, false, false),
        _ => return None,
    })
}

/// One step of a pre-tokenizer.
#[derive(Debug)]
enum Splitter {
    Gpt2,
    /// llama3 (digits in runs of up to 3), qwen2 (single digits) and
    /// qwen35 (single digits, letters absorb combining marks).
    Llama3Like {
        max_digits: usize,
        marks: bool,
    },
    Regex(CollapsedRegex),
}

/// A regex as llama.cpp runs it through std::regex: on the collapsed text
/// when it uses `\p{..}` classes, else on the codepoints with non-ASCII
/// whitespace turned into U+000B.
#[derive(Debug)]
struct CollapsedRegex {
    re: Regex,
    collapsed: bool,
}

#[derive(Debug)]
pub struct PreTokenizer {
    splitters: Vec<Splitter>,
}

/// A regex of the spec could not be built (a bug in the table, or an
/// unsupported construct).
#[derive(Debug, thiserror::Error)]
#[error("pre-tokenizer regex {regex:?}: {reason}")]
pub struct RegexError {
    pub regex: String,
    pub reason: String,
}

impl PreTokenizer {
    pub fn new(regexes: &[&str]) -> Result<PreTokenizer, RegexError> {
        let splitters = regexes
            .iter()
            .map(|&r| {
                Ok(match r {
                    re::GPT2 => Splitter::Gpt2,
                    re::LLAMA3 => Splitter::Llama3Like {
                        max_digits: 3,
                        marks: false,
                    },
                    re::QWEN2 => Splitter::Llama3Like {
                        max_digits: 1,
                        marks: false,
                    },
                    re::QWEN35 => Splitter::Llama3Like {
                        max_digits: 1,
                        marks: true,
                    },
                    _ => Splitter::Regex(CollapsedRegex::new(r)?),
                })
            })
            .collect::<Result<Vec<_>, RegexError>>()?;
        Ok(PreTokenizer { splitters })
    }

    /// Split `text` into words, as byte ranges that cover it in order.
    pub fn split(&self, text: &str) -> Vec<Range<usize>> {
        let cpts: Vec<char> = text.chars().collect();
        let mut parts = vec![cpts.len()];
        for s in &self.splitters {
            parts = match s {
                Splitter::Gpt2 => split_gpt2(&cpts, &parts),
                Splitter::Llama3Like { max_digits, marks } => {
                    split_llama3_like(&cpts, &parts, *max_digits, *marks)
                }
                Splitter::Regex(r) => r.split(&cpts, &parts),
            };
        }
        let mut byte_at: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        byte_at.push(text.len());
        let mut out = Vec::with_capacity(parts.len());
        let mut cp = 0;
        for len in parts {
            if len > 0 {
                out.push(byte_at[cp]..byte_at[cp + len]);
                cp += len;
            }
        }
        out
    }
}

/// Accessors over one piece `[ini, end)` of the codepoints, with llama.cpp's
/// convention that positions outside the piece have no class at all.
struct Piece<'a> {
    cpts: &'a [char],
    ini: usize,
    end: usize,
}

impl Piece<'_> {
    #[inline]
    fn cpt(&self, pos: usize) -> Option<char> {
        (self.ini <= pos && pos < self.end).then(|| self.cpts[pos])
    }
    #[inline]
    fn flags(&self, pos: usize) -> CpFlags {
        match self.cpt(pos) {
            Some(c) => flags(c),
            None => CpFlags::NONE,
        }
    }
}

/// Iterate the pieces of a partition as (start, end) codepoint indices.
fn pieces(parts: &[usize]) -> impl Iterator<Item = (usize, usize)> + '_ {
    parts.iter().scan(0usize, |start, &len| {
        let ini = *start;
        *start += len;
        Some((ini, *start))
    })
}

/// Pushes word lengths, splitting at increasing positions.
struct Words<'a> {
    out: &'a mut Vec<usize>,
    prev_end: usize,
}

impl Words<'_> {
    fn cut(&mut self, end: usize) {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
    }
}

/// Contractions `'s 't 're 've 'm 'll 'd` at `pos` (an apostrophe), with
/// ASCII case folding when `fold` is set: the length matched, if any.
fn contraction(p: &Piece, pos: usize, fold: bool) -> Option<usize> {
    if p.cpt(pos) != Some('\'') || pos + 1 >= p.end {
        return None;
    }
    let lower = |c: char| if fold { c.to_ascii_lowercase() } else { c };
    let n1 = lower(p.cpts[pos + 1]);
    if matches!(n1, 's' | 't' | 'm' | 'd') {
        return Some(2);
    }
    if pos + 2 < p.end {
        let n2 = lower(p.cpts[pos + 2]);
        if matches!((n1, n2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
            return Some(3);
        }
    }
    None
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// the way llama.cpp's hand-written splitter does it.
fn split_gpt2(cpts: &[char], parts: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(parts.len());
    for (ini, end) in pieces(parts) {
        let p = Piece { cpts, ini, end };
        let mut w = Words {
            out: &mut out,
            prev_end: ini,
        };
        let mut pos = ini;
        while pos < end {
            let c = cpts[pos];
            if let Some(n) = contraction(&p, pos, false) {
                pos += n;
                w.cut(pos);
                continue;
            }
            let space = c == ' ';
            let mut f2 = if space { p.flags(pos + 1) } else { flags(c) };
            let other =
                |f: CpFlags| !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.is_some();
            if f2.is_letter() || f2.is_number() {
                let letter = f2.is_letter();
                let same = |f: CpFlags| if letter { f.is_letter() } else { f.is_number() };
                pos += space as usize;
                while same(f2) {
                    pos += 1;
                    f2 = p.flags(pos);
                }
                w.cut(pos);
                continue;
            }
            if other(f2) {
                pos += space as usize;
                while other(f2) {
                    pos += 1;
                    f2 = p.flags(pos);
                }
                w.cut(pos);
                continue;
            }
            let mut n_ws = 0;
            while p.flags(pos + n_ws).is_whitespace() {
                n_ws += 1;
            }
            if n_ws > 1 && p.cpt(pos + n_ws).is_some() {
                // \s+(?!\S): leave the last space to the next word.
                pos += n_ws - 1;
            } else if n_ws > 0 {
                pos += n_ws;
            } else {
                pos += 1;
            }
            w.cut(pos);
        }
    }
    out
}

/// llama.cpp's hand-written splitter for the Llama 3 regex family:
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
/// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`, with qwen2's single
/// digits and qwen35's combining marks as parameters.
fn split_llama3_like(cpts: &[char], parts: &[usize], max_digits: usize, marks: bool) -> Vec<usize> {
    let mut out = Vec::with_capacity(parts.len());
    let wordish = |f: CpFlags| f.is_letter() || (marks && f.is_mark());
    for (ini, end) in pieces(parts) {
        let p = Piece { cpts, ini, end };
        let mut w = Words {
            out: &mut out,
            prev_end: ini,
        };
        let mut pos = ini;
        while pos < end {
            let c = cpts[pos];
            let f = flags(c);
            if let Some(n) = contraction(&p, pos, true) {
                pos += n;
                w.cut(pos);
                continue;
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+ (letters may carry marks for qwen35)
            if !(c == '\r' || c == '\n' || f.is_number())
                && (wordish(f) || wordish(p.flags(pos + 1)))
            {
                pos += 1;
                while wordish(p.flags(pos)) {
                    pos += 1;
                }
                w.cut(pos);
                continue;
            }
            // \p{N}{1,max_digits}
            if f.is_number() {
                let mut run = 0;
                while p.flags(pos).is_number() {
                    pos += 1;
                    run += 1;
                    if run >= max_digits {
                        w.cut(pos);
                        run = 0;
                    }
                }
                w.cut(pos);
                continue;
            }
            // <space>?[^\s\p{L}\p{N}]+[\r\n]*  (the guard tests the first
            // codepoint's flags, as llama.cpp does)
            let other =
                |g: CpFlags| !(g.is_whitespace() || wordish(g) || g.is_number()) && g.is_some();
            let mut f2 = if c == ' ' { p.flags(pos + 1) } else { f };
            if !(f2.is_whitespace() || wordish(f2) || f2.is_number()) && f.is_some() {
                pos += (c == ' ') as usize;
                while other(f2) {
                    pos += 1;
                    f2 = p.flags(pos);
                }
                while matches!(p.cpt(pos), Some('\r' | '\n')) {
                    pos += 1;
                }
                w.cut(pos);
                continue;
            }
            let mut n_ws = 0;
            let mut last_newline_end = None;
            while p.flags(pos + n_ws).is_whitespace() {
                if matches!(p.cpt(pos + n_ws), Some('\r' | '\n')) {
                    last_newline_end = Some(pos + n_ws + 1);
                }
                n_ws += 1;
            }
            if let Some(e) = last_newline_end {
                // \s*[\r\n]+
                pos = e;
            } else if n_ws > 1 && p.cpt(pos + n_ws).is_some() {
                // \s+(?!\S)
                pos += n_ws - 1;
            } else if n_ws > 0 {
                pos += n_ws;
            } else {
                pos += 1;
            }
            w.cut(pos);
        }
    }
    out
}

/// Stand-ins for non-ASCII codepoints in the collapsed text (llama.cpp uses
/// the bytes 0xD0..0xD5; we use private-use codepoints, which no class of
/// the rewritten regexes matches by accident).
const COLLAPSED_OTHER: char = '\u{E0D0}';

fn collapsed_char(c: char) -> char {
    if c.is_ascii() {
        return c;
    }
    let f = flags(c);
    if f.is_whitespace() {
        return '\u{0B}';
    }
    match f.category() {
        CpFlags::NUMBER => '\u{E0D1}',
        CpFlags::LETTER => '\u{E0D2}',
        CpFlags::PUNCTUATION => '\u{E0D3}',
        CpFlags::MARK => '\u{E0D4}',
        CpFlags::SYMBOL => '\u{E0D5}',
        _ => COLLAPSED_OTHER,
    }
}

/// Members of the class that `\p{name}` becomes in a collapsed regex: the
/// stand-in plus the ASCII codepoints of that class (llama.cpp's
/// `k_ucat_map`), in Rust class syntax.
fn category_members(name: &str) -> Option<&'static str> {
    Some(match name {
        "N" => r"\x{E0D1}0-9",
        "L" | "Lu" | "Ll" | "Lt" | "Lm" | "Lo" => r"\x{E0D2}A-Za-z",
        "P" => {
            r"\x{E0D3}\x{21}-\x{23}\x{25}-\x{2A}\x{2C}-\x{2F}\x{3A}-\x{3B}\x{3F}-\x{40}\x{5B}-\x{5D}\x{5F}\x{7B}\x{7D}"
        }
        "M" => r"\x{E0D4}",
        "S" => r"\x{E0D5}\x{24}\x{2B}\x{3C}-\x{3E}\x{5E}\x{60}\x{7C}\x{7E}",
        _ => return None,
    })
}

/// ECMAScript's ASCII-only shorthand classes, as class members.
fn shorthand_members(c: char) -> Option<&'static str> {
    Some(match c {
        's' => r"\x{09}-\x{0D}\x{20}",
        'd' => "0-9",
        'w' => "0-9A-Za-z_",
        _ => return None,
    })
}

fn escaped_literal(c: char) -> Option<char> {
    Some(match c {
        'r' => '\r',
        'n' => '\n',
        't' => '\t',
        'f' => '\u{0C}',
        'v' => '\u{0B}',
        c if c.is_ascii_punctuation() => c,
        _ => return None,
    })
}

/// Rewrite one of llama.cpp's (ECMAScript) regexes into fancy-regex syntax:
/// categories as collapsed classes, shorthands as their ASCII meaning,
/// every literal as an `\x{..}` escape so that Rust's class operators
/// (`&&`, `--`, nested `[`) can never be triggered by accident.
fn translate(src: &str, collapsed: bool) -> Result<String, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len() * 2);
    let mut i = 0;
    let mut in_class = false;
    let lit = |c: char| format!(r"\x{{{:X}}}", c as u32);
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            let n = *chars.get(i + 1).ok_or("trailing backslash")?;
            if n == 'p' {
                if chars.get(i + 2) != Some(&'{') {
                    return Err("\\p without {".into());
                }
                let close = chars[i..]
                    .iter()
                    .position(|&x| x == '}')
                    .ok_or("unclosed \\p{")?
                    + i;
                let name: String = chars[i + 3..close].iter().collect();
                if !collapsed {
                    return Err(format!("\\p{{{name}}} outside collapsed mode"));
                }
                let m = category_members(&name)
                    .ok_or_else(|| format!("unsupported class \\p{{{name}}}"))?;
                if in_class {
                    out.push_str(m);
                } else {
                    out.push('[');
                    out.push_str(m);
                    out.push(']');
                }
                i = close + 1;
                continue;
            }
            if let Some(m) = shorthand_members(n.to_ascii_lowercase()) {
                let negated = n.is_ascii_uppercase();
                match (in_class, negated) {
                    (true, false) => out.push_str(m),
                    (true, true) => return Err(format!("\\{n} inside a class")),
                    (false, false) => out.push_str(&format!("[{m}]")),
                    (false, true) => out.push_str(&format!("[^{m}]")),
                }
                i += 2;
                continue;
            }
            let l = escaped_literal(n).ok_or_else(|| format!("unsupported escape \\{n}"))?;
            out.push_str(&lit(l));
            i += 2;
            continue;
        }
        if in_class {
            match c {
                ']' => {
                    in_class = false;
                    out.push(']');
                }
                '-' => {
                    // A range between two members, or a literal at the edges.
                    let at_edge = matches!(chars.get(i + 1), Some(']') | None)
                        || out.ends_with('[')
                        || out.ends_with("[^");
                    if at_edge {
                        out.push_str(&lit('-'));
                    } else {
                        out.push('-');
                    }
                }
                _ => out.push_str(&lit(c)),
            }
            i += 1;
            continue;
        }
        match c {
            '[' => {
                in_class = true;
                out.push('[');
                if chars.get(i + 1) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
            }
            '(' | ')' | '|' | '?' | '*' | '+' | '{' | '}' | '$' | '^' | ':' | '=' | '!' | ',' => {
                out.push(c)
            }
            '0'..='9' => out.push(c),
            '.' => out.push_str(r"[^\n\r\x{2028}\x{2029}]"),
            _ => out.push_str(&lit(c)),
        }
        i += 1;
    }
    if in_class {
        return Err("unclosed class".into());
    }
    Ok(out)
}

impl CollapsedRegex {
    fn new(src: &str) -> Result<CollapsedRegex, RegexError> {
        let err = |reason: String| RegexError {
            regex: src.to_string(),
            reason,
        };
        // llama.cpp's test for "uses a unicode category": its k_ucat_enum.
        let collapsed = [
            "\\p{N}", "\\p{L}", "\\p{P}", "\\p{M}", "\\p{S}", "\\p{Lu}", "\\p{Ll}", "\\p{Lt}",
            "\\p{Lm}", "\\p{Lo}",
        ]
        .iter()
        .any(|c| src.contains(c));
        if collapsed && !src.is_ascii() {
            // llama.cpp throws for these too.
            return Err(err(
                "unicode categories mixed with non-ASCII literals".into()
            ));
        }
        let pattern = translate(src, collapsed).map_err(err)?;
        let re = Regex::new(&pattern).map_err(|e| RegexError {
            regex: src.to_string(),
            reason: format!("{e} (rewritten as {pattern:?})"),
        })?;
        Ok(CollapsedRegex { re, collapsed })
    }

    fn split(&self, cpts: &[char], parts: &[usize]) -> Vec<usize> {
        let mut hay = String::with_capacity(cpts.len());
        // Byte offset in `hay` of each codepoint, plus the end.
        let mut at = Vec::with_capacity(cpts.len() + 1);
        for &c in cpts {
            at.push(hay.len());
            let h = if self.collapsed {
                collapsed_char(c)
            } else if !c.is_ascii() && flags(c).is_whitespace() {
                '\u{0B}'
            } else {
                c
            };
            hay.push(h);
        }
        at.push(hay.len());
        let cp_of = |byte: usize| at.partition_point(|&b| b < byte);

        let mut out = Vec::with_capacity(parts.len());
        for (ini, end) in pieces(parts) {
            let piece = &hay[at[ini]..at[end]];
            let base = at[ini];
            let mut done = ini;
            let mut pos = 0;
            // Matches in order, like std::regex_iterator over the piece.
            while pos <= piece.len() {
                let m = match self.re.find_from_pos(piece, pos) {
                    Ok(Some(m)) => m,
                    // A backtracking limit or no further match: the rest
                    // stays one word.
                    _ => break,
                };
                let (ms, me) = (cp_of(base + m.start()), cp_of(base + m.end()));
                if ms > done {
                    out.push(ms - done);
                }
                if me > ms {
                    out.push(me - ms);
                }
                done = me;
                pos = if m.end() > m.start() {
                    m.end()
                } else {
                    // Step over an empty match by one codepoint.
                    m.end() + piece[m.end()..].chars().next().map_or(1, char::len_utf8)
                };
            }
            if end > done {
                out.push(end - done);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words<'t>(pre: &str, text: &'t str) -> Vec<&'t str> {
        let spec = pre_spec(pre).unwrap();
        let p = PreTokenizer::new(spec.regexes).unwrap();
        p.split(text).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn every_spec_builds() {
        for name in [
            "default",
            "llama3",
            "deepseek-llm",
            "deepseek-coder",
            "deepseek-v3",
            "falcon",
            "gpt-2",
            "starcoder",
            "smollm",
            "qwen2",
            "qwen35",
            "chatglm-bpe",
            "bloom",
            "viking",
            "seed-coder",
            "bailingmoe",
            "ufakzeka",
            "minicpm5",
        ] {
            let spec = pre_spec(name).unwrap();
            PreTokenizer::new(spec.regexes).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(pre_spec("no-such-pre").is_none());
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            words("gpt-2", "Hello world's  end   \n x"),
            ["Hello", " world", "'s", " ", " end", "   \n", " x"]
        );
        assert_eq!(words("gpt-2", "a  "), ["a", "  "]);
        assert_eq!(words("gpt-2", "I'LL x"), ["I", "'", "LL", " x"]);
    }

    #[test]
    fn smollm_splits_every_digit() {
        assert_eq!(
            words("smollm", "x 12345"),
            ["x", " ", "1", "2", "3", "4", "5"]
        );
        assert_eq!(words("smollm", "v٣٤"), ["v", "٣", "٤"]);
    }

    #[test]
    fn llama3_words() {
        assert_eq!(
            words("llama3", "1234567 I'LL"),
            ["123", "456", "7", " I", "'LL"]
        );
        assert_eq!(words("llama3", "a\n\n  b"), ["a", "\n\n", " ", " b"]);
        assert_eq!(words("llama3", "x!!\n\ny"), ["x", "!!\n\n", "y"]);
        assert_eq!(words("qwen2", "123"), ["1", "2", "3"]);
    }

    #[test]
    fn default_regexes_refine_each_other() {
        // [\p{P}$+<=>^~|]+ first, then gpt2, then \p{N}+, then [0-9]{3}.
        assert_eq!(
            words("default", "a+=b 12345"),
            ["a", "+=", "b", " ", "123", "45"]
        );
        assert_eq!(words("default", "12345"), ["123", "45"]);
    }

    #[test]
    fn collapsed_categories_see_non_ascii() {
        assert_eq!(
            words("deepseek-coder", "héllo, wörld"),
            ["héllo", ",", " wörld"]
        );
        assert_eq!(words("bloom", "hi, there!"), ["hi", ",", " there", "!"]);
    }

    #[test]
    fn bad_regexes_are_errors() {
        for r in ["\\p", "\\pL", "\\p{Xx}", "[abc", "\\q", "\\S\\p{Han}"] {
            assert!(PreTokenizer::new(&[r]).is_err(), "{r}");
        }
    }

    #[test]
    fn words_cover_the_text() {
        let text = "Ünïcödé 漢字 mixed\t\u{00A0} 42 🎉🎉 x";
        for name in [
            "default",
            "llama3",
            "smollm",
            "qwen2",
            "deepseek-llm",
            "bloom",
            "falcon",
        ] {
            let w = words(name, text);
            assert_eq!(w.concat(), text, "{name}");
            assert!(w.iter().all(|s| !s.is_empty()), "{name}");
        }
    }
}
