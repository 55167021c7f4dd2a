"""Drive llorchd with the official `openai` Python client.

Usage: openai_client.py BASE_URL MODEL. Prints one JSON line with what it
saw; exits non-zero on any failure. Run by tests/serve.rs.
"""
import json
import sys

import openai

base, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=60)
out = {"rate_limited": False}

# A streamed chat completion.
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Say hello in one sentence."}],
    max_tokens=6,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
text, n, usage = "", 0, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
        n += 1
assert n >= 1 and text, "no streamed chat content"
assert usage is not None and usage.completion_tokens >= 1
out["chat_text"], out["chat_chunks"], out["usage_total"] = text, n, usage.total_tokens

# A streamed completion.
stream = client.completions.create(
    model=model, prompt="Once upon a time", max_tokens=6, temperature=0, stream=True
)
ctext, cn, finish = "", 0, None
for chunk in stream:
    if chunk.choices:
        ctext += chunk.choices[0].text
        cn += 1 if chunk.choices[0].text else 0
        finish = chunk.choices[0].finish_reason or finish
assert cn >= 1 and ctext and finish in ("stop", "length"), (cn, ctext, finish)
out["completion_chunks"], out["completion_text"] = cn, ctext

# Non-streaming, with the models list.
ids = [m.id for m in client.models.list().data]
assert model in ids, ids
r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, seed=1
)
assert r.choices[0].message.role == "assistant"
assert r.usage.completion_tokens <= 3

# Errors come back as the client's exception types.
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise SystemExit("expected NotFoundError")
except openai.NotFoundError:
    pass
except openai.RateLimitError:
    out["rate_limited"] = True

print(json.dumps(out))
