//! Chat templates: turn `[{role, content}]` messages into a prompt by
//! rendering the model's `tokenizer.chat_template` (Jinja) with minijinja,
//! the way Hugging Face and llama.cpp's server do.
//!
//! The rendered prompt is meant to be encoded with `add_special = true`:
//! like llama.cpp (`common_chat_template_direct_apply`), a BOS text that the
//! template emits at the start is removed when the tokenizer adds BOS
//! itself, so the prompt does not start with two BOS tokens.

use minijinja::{Environment, Error, ErrorKind, Value};
use serde::Serialize;

use crate::gguf::Gguf;
use crate::model::tokenizer::Tokenizer;

const KEY_TEMPLATE: &str = "tokenizer.chat_template";

/// llama.cpp's fallback when a model has no template.
const CHATML: &str = "{%- for message in messages -%}\n  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n  {{- '<|im_start|>assistant\\n' -}}\n{%- endif -%}";

/// Gemma 3's published template (system prompt folded into the first user
/// turn, `assistant` called `model`). Some Gemma 3 GGUFs, including our
/// 270M test model, ship without a template; llama.cpp would fall back to
/// ChatML there, which the model was never trained on.
const GEMMA3: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"#;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Where a model's template came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateSource {
    /// `tokenizer.chat_template` in the GGUF.
    Model,
    /// Built in for an architecture whose GGUF lacks one (gemma3).
    BuiltIn,
    /// ChatML, for any other model without a template.
    ChatmlFallback,
}

#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    #[error("chat template does not compile: {0:#}")]
    Syntax(Error),
    #[error("chat template failed: {0:#}")]
    Render(Error),
    #[error("no messages to render")]
    NoMessages,
}

/// A compiled chat template plus the special-token texts it may use.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: TemplateSource,
    bos_token: String,
    eos_token: String,
    /// The tokenizer adds BOS/EOS itself, so leading/trailing copies in the
    /// rendered text are dropped.
    strip_bos: bool,
    strip_eos: bool,
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// Civil date (UTC) of a day count since 1970-01-01 (Howard Hinnant's
/// days-to-civil algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `strftime` for the conversions chat templates use (`%Y %m %d %B %b %H
/// %M %S %%`), in UTC.
fn strftime(fmt: &str, unix_secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let (y, m, d) = civil_from_days(unix_secs.div_euclid(86_400));
    let secs = unix_secs.rem_euclid(86_400);
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out += &y.to_string(),
            Some('m') => out += &format!("{m:02}"),
            Some('d') => out += &format!("{d:02}"),
            Some('B') => out += MONTHS[m as usize - 1],
            Some('b') => out += &MONTHS[m as usize - 1][..3],
            Some('H') => out += &format!("{:02}", secs / 3600),
            Some('M') => out += &format!("{:02}", secs / 60 % 60),
            Some('S') => out += &format!("{:02}", secs % 60),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Llama 3.x templates print today's date with `strftime_now`.
fn strftime_now(fmt: String) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime(&fmt, now)
}

impl ChatTemplate {
    /// The model's template (or the fallback), with BOS/EOS texts and
    /// add_bos/add_eos from its tokenizer.
    pub fn from_gguf(g: &Gguf, tok: &Tokenizer) -> Result<ChatTemplate, ChatTemplateError> {
        let (src, source) = match g.get_str(KEY_TEMPLATE) {
            Some(t) => (t.to_string(), TemplateSource::Model),
            None if g.architecture() == Some("gemma3") => {
                (GEMMA3.to_string(), TemplateSource::BuiltIn)
            }
            None => (CHATML.to_string(), TemplateSource::ChatmlFallback),
        };
        let token = |id: Option<u32>| {
            id.map(|id| String::from_utf8_lossy(tok.piece(id, true)).into_owned())
                .unwrap_or_default()
        };
        let mut t = ChatTemplate::new(&src, &token(tok.bos()), &token(tok.eos()))?;
        t.source = source;
        t.strip_bos = tok.add_bos();
        t.strip_eos = tok.add_eos();
        Ok(t)
    }

    /// Compile a template given as text (`bos_token`/`eos_token` are the
    /// texts the template sees under those names).
    pub fn new(
        template: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, ChatTemplateError> {
        let mut env = Environment::new();
        // Hugging Face renders with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", template.to_string())
            .map_err(ChatTemplateError::Syntax)?;
        Ok(ChatTemplate {
            env,
            source: TemplateSource::Model,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            strip_bos: false,
            strip_eos: false,
        })
    }

    pub fn source(&self) -> TemplateSource {
        self.source
    }

    /// Render `messages`; with `add_generation_prompt`, end with the header
    /// of the assistant's turn.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        if messages.is_empty() {
            return Err(ChatTemplateError::NoMessages);
        }
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(ChatTemplateError::Render)?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        let mut out = tmpl.render(ctx).map_err(ChatTemplateError::Render)?;
        if self.strip_bos && !self.bos_token.is_empty() && out.starts_with(&self.bos_token) {
            out.drain(..self.bos_token.len());
        }
        if self.strip_eos && !self.eos_token.is_empty() && out.ends_with(&self.eos_token) {
            out.truncate(out.len() - self.eos_token.len());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello!"),
            ChatMessage::new("user", "Bye"),
        ]
    }

    #[test]
    fn chatml_fallback() {
        let t = ChatTemplate::new(CHATML, "", "").unwrap();
        assert_eq!(
            t.render(&conv()[1..2], true).unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn gemma3_builtin_folds_the_system_prompt() {
        let mut t = ChatTemplate::new(GEMMA3, "<bos>", "<eos>").unwrap();
        let full = "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n";
        assert_eq!(t.render(&conv(), true).unwrap(), full);
        // With a tokenizer that adds BOS, the template's BOS text goes.
        t.strip_bos = true;
        assert_eq!(t.render(&conv(), true).unwrap(), &full["<bos>".len()..]);
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new(GEMMA3, "<bos>", "<eos>").unwrap();
        let bad = [ChatMessage::new("assistant", "first")];
        let e = t.render(&bad, false).unwrap_err();
        assert!(matches!(e, ChatTemplateError::Render(_)));
        assert!(e.to_string().contains("must alternate"), "{e}");
    }

    #[test]
    fn broken_templates_are_errors() {
        assert!(matches!(
            ChatTemplate::new("{% for m in messages %}{{ m.role }", "", ""),
            Err(ChatTemplateError::Syntax(_))
        ));
        let t = ChatTemplate::new("{{ messages[0].content.nosuchmethod() }}", "", "").unwrap();
        assert!(matches!(
            t.render(&conv(), false),
            Err(ChatTemplateError::Render(_))
        ));
        let t = ChatTemplate::new("{{ no_such_function() }}", "", "").unwrap();
        assert!(t.render(&conv(), false).is_err());
        assert!(matches!(
            t.render(&[], false),
            Err(ChatTemplateError::NoMessages)
        ));
    }

    #[test]
    fn strftime_formats_dates() {
        assert_eq!(strftime("%d %b %Y", 0), "01 Jan 1970");
        // 2024-02-29 12:34:56 UTC
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S %B %%", 1_709_210_096),
            "2024-02-29 12:34:56 February %"
        );
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}", "", "").unwrap();
        let y = t.render(&conv(), false).unwrap();
        assert!(y.len() == 4 && y.starts_with("20"), "{y}");
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{{ m.content.strip().upper() }}{% if m.role.startswith('us') %}!{% endif %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let msgs = [
            ChatMessage::new("user", "  hi  "),
            ChatMessage::new("assistant", "yo"),
        ];
        assert_eq!(t.render(&msgs, false).unwrap(), "HI!YO");
    }
}
