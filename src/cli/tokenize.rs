//! `llorchd tokenize`: print a model's token ids for a text, like
//! llama.cpp's `llama-tokenize --ids`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use llorchd::gguf::GgufFile;
use llorchd::model::tokenizer::Tokenizer;

use super::Run;

#[derive(Debug, Clone, clap::Args)]
pub struct TokenizeArgs {
    /// GGUF model file whose tokenizer to use.
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Text to tokenize (`\n`, `\t`, `\xNN`... escapes are processed, as
    /// llama-tokenize does, unless --no-escape).
    #[arg(
        short = 'p',
        long,
        alias = "prompt",
        required_unless_present = "file",
        conflicts_with = "file"
    )]
    pub text: Option<String>,
    /// Read the text from a file, verbatim (escapes still processed unless
    /// --no-escape).
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Do not add BOS/EOS even where the model's metadata asks for them.
    #[arg(long)]
    pub no_bos: bool,
    /// Treat special-token text such as `<|im_start|>` as plain text.
    #[arg(long)]
    pub no_parse_special: bool,
    /// Do not process escape sequences in the text.
    #[arg(long)]
    pub no_escape: bool,
}

/// llama.cpp's `string_process_escapes`: `\n \r \t \' \" \\` and `\xNN`;
/// any other backslash stays as written.
pub fn process_escapes(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        if c != b'\\' || i + 1 >= input.len() {
            out.push(c);
            i += 1;
            continue;
        }
        i += 1;
        let e = input[i];
        match e {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'\'' | b'"' | b'\\' => out.push(e),
            b'x' if i + 2 < input.len() => {
                let hex = std::str::from_utf8(&input[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) if hex.is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())) => {
                        out.push(v);
                        i += 2;
                    }
                    _ => out.extend_from_slice(&[b'\\', e]),
                }
            }
            _ => out.extend_from_slice(&[b'\\', e]),
        }
        i += 1;
    }
    out
}

impl Run for TokenizeArgs {
    fn run(self, _ctx: &super::Context) -> anyhow::Result<ExitCode> {
        tokenize(&self)?;
        Ok(ExitCode::SUCCESS)
    }
}

fn tokenize(args: &TokenizeArgs) -> anyhow::Result<()> {
    let raw: Vec<u8> = match (&args.text, &args.file) {
        (Some(t), _) => t.as_bytes().to_vec(),
        (None, Some(f)) => {
            std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, None) => anyhow::bail!("give --text or --file"),
    };
    let bytes = if args.no_escape {
        raw
    } else {
        process_escapes(&raw)
    };
    let text = String::from_utf8(bytes).context("the text is not valid UTF-8")?;
    let file = GgufFile::open(&args.model)?;
    let tok = Tokenizer::from_gguf(&file.header)
        .with_context(|| format!("loading the tokenizer of {}", args.model.display()))?;
    let ids = tok.encode(&text, !args.no_bos, !args.no_parse_special);
    let list: Vec<String> = ids.iter().map(u32::to_string).collect();
    println!("[{}]", list.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::process_escapes;

    #[test]
    fn escapes_like_llama_cpp() {
        assert_eq!(
            process_escapes(br"a\nb\tc\\d\'\x41\x4"),
            b"a\nb\tc\\d'A\\x4"
        );
        assert_eq!(process_escapes(br"\q\"), br"\q\");
        assert_eq!(process_escapes(br"\xZZ"), br"\xZZ");
    }
}
