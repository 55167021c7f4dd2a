#!/usr/bin/env python3
"""DEV-ONLY: regenerate tests/data/tokenizer-cases.json from llama.cpp.

Needs a local llama.cpp build (the version our parity reference comes from:
llama-cpp-python 0.3.36's vendor/llama.cpp) and the real test models. The
output is llama.cpp's own token ids, i.e. facts our tokenizer must match;
tests/tokenizer_parity.rs checks them. Not run by CI.

    LLAMA_CPP_BIN=.../vendor/llama.cpp/build/bin \\
    python3 tests/data/gen_tokenizer_cases.py

What it records:
- every corpus text through `llama-tokenize -f FILE --no-escape` for both
  real models (BOS per the model, special tokens parsed), and texts with
  special-token markup again with --no-parse-special;
- each token's piece (llama-tokenize's "id -> 'piece'" listing, which uses
  common_token_to_piece with special = true), as hex;
- the end-of-generation ids llama.cpp logs at load;
- variants: SmolLM2's vocabulary under other `tokenizer.ggml.pre` values and
  Gemma 3's with add_space_prefix = true (vocab-only GGUFs written here).
  Those run the whole corpus in one call, texts joined by a control token,
  and split the ids at that token: fragments between special tokens are
  tokenized independently, so each segment is the text's own tokenization.
"""
import json
import os
import random
import re
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get(
    "LLAMA_CPP_BIN",
    "/work/cache/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin")
MODELS = os.environ.get("LLORCH_MODEL_CACHE", os.path.expanduser("~/.cache/llorchd/models"))
REAL = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
}
SMOLLM_PRE_VARIANTS = [
    "default", "gpt-2", "llama3", "qwen2", "qwen35", "deepseek-llm", "deepseek-coder",
    "deepseek-v3", "falcon", "starcoder", "refact", "command-r", "bloom", "viking",
    "chatglm-bpe", "seed-coder", "bailingmoe", "ufakzeka", "minicpm5", "dbrx", "stablelm2",
]


def corpus():
    t = []
    # Whitespace.
    t += [" ", "  ", "   ", "a  b", "a   b", "\t", "\t\t", "a\tb", "\n", "\n\n", "\n\n\n",
          "\r\n", "\r\n\r\n", "a \n b", "  leading", "trailing  ", "trailing\n",
          "mixed \t\n \r\n end", "\u00a0", "a\u00a0b", "a \u00a0 b", "\u3000x", "\u2003x\u2003",
          "x\u200by", "\x0b\x0c", "   \n   \n", "\n \n", " \t \t", "end\n\n\n\n", "\r", "a\rb",
          "\u0085", "\u2028\u2029", "tab\t\tand  spaces   \n\n  ", "    indented", " " * 40,
          "\n" * 30, "x" + " " * 31 + "y", "a " * 20]
    # Numbers.
    t += ["0", "12", "123", "1234", "12345", "1234567890", "3.14159", "1,000,000", "-42",
          "2024-01-01", "\u0663\u0664\u0665", "\u216b\u2163", "\u00bd", "\u00b9\u00b2\u00b3",
          "x1y22z333", "007", "1e10", "0x1F", "12 345 6789", "v1.2.3", "1" * 100,
          "$19.99", "50%", "+1 (555) 010-9999", "\uff11\uff12\uff13"]
    # Contractions and capitalisation.
    t += ["don't", "I'm", "we'll", "they're", "you've", "she'd", "it's", "IT'S", "I'LL",
          "DON'T", "We'Re", "'s", "'", "''", "rock 'n' roll", "o'clock", "it\u2019s",
          "'S 'T 'RE 'VE 'M 'LL 'D", "'sup 'tis", "y'all'd've", "Hello World HELLO world"]
    # Punctuation.
    t += ["Hello, world!", "...", "?!?!", "---", "!!!", "@#$%^&*()", "a.b.c", "(parens)",
          "[brackets]", "{braces}", "\"quoted\"", "\u00abguillemets\u00bb", "\u00bfQu\u00e9?",
          "\u00a1Hola!", "a -- b", "x+=1; y|=2", "<>=!=", "~~~", "``code``", "__init__",
          "a\\b", "...and then...", "\u2014em dash\u2014", "\u201cquoted\u201d \u2018single\u2019"]
    # Code, URLs.
    t += ["fn main() { println!(\"{}\", x); }", "def f(x):\n    return x**2\n",
          "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}", "<div class=\"x\">Hi</div>",
          "SELECT * FROM t WHERE id = 1;", "x => x * 2", "#include <stdio.h>",
          "    indented\n        more", "a_b_c snake_case CamelCase camelCase",
          "// comment", "/* block */", "$var @decorator", "https://example.com/path?q=1&r=2#frag",
          "user@example.com", "C:\\Users\\x", "~/dir/file.txt", "#!/bin/bash\necho $HOME",
          "{\"key\": [1, 2, {\"n\": null}]}", "if x:\n\tpass\nelse:\n\traise", "a<b>c</b>"]
    # Scripts.
    t += ["na\u00efve caf\u00e9 r\u00e9sum\u00e9", "Gr\u00f6\u00dfe Stra\u00dfe",
          "\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u03ba\u03cc\u03c3\u03bc\u03b5",
          "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440", "\u0532\u0561\u0580\u0565\u0582",
          "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
          "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
          "\u0633\u0644\u0627\u0645", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
          "\u09b9\u09cd\u09af\u09be\u09b2\u09cb", "\u0bb5\u0ba3\u0b95\u0bcd\u0b95\u0bae\u0bcd",
          "\u0c39\u0c32\u0c4b", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01",
          "\u0eaa\u0eb0\u0e9a\u0eb2\u0e8d\u0e94\u0eb5", "\u0f56\u0f7c\u0f51\u0f0b",
          "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0", "\u1230\u120b\u121d",
          "\u4f60\u597d\uff0c\u4e16\u754c\uff01", "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c",
          "\u30ab\u30bf\u30ab\u30ca", "\uc548\ub155\ud558\uc138\uc694 \uc138\uacc4", "\u1100\u1101",
          "Ti\u1ebfng Vi\u1ec7t", "\u0130stanbul \u0131\u011fd\u0131r", "\u1828\u1823\u1829\u182d\u1823\u182f",
          "\u179f\u17bd\u179f\u17d2\u178f\u17b8", "\u1019\u1004\u103a\u1039\u1002\u101c\u102c\u1015\u102b",
          "\u0d86\u0dba\u0dd4\u0db6\u0ddd\u0dc0\u0db1\u0dca", "\u13e3\u13b3\u13a9",
          "\u2211\u222b\u221a\u221e\u2260\u2264", "\u20ac\u00a3\u00a5\u20b9\u20bf",
          "\u250c\u2500\u2510", "\u2813\u2811\u2807\u2807\u2815", "\u16a0\u16a2\u16a6",
          "\U00020000\U0002a700", "\U0002ebf0\U0002ee5d", "\u2ffc\u31ef", "\U0001c89a",
          "\U0010ffff\ue000", "\ufffe\uffff", "\ufeffBOM", "\ufffd", "\u00ad soft hyphen"]
    # Emoji.
    t += ["\U0001F600", "\U0001F680\U0001F525", "\U0001F469\u200d\U0001F4BB",
          "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466", "\U0001F44D\U0001F3FD",
          "\U0001F1FA\U0001F1F8\U0001F1EF\U0001F1F5", "\u2764\ufe0f", "\u263a\ufe0e", "1\ufe0f\u20e3",
          "\U0001F3F3\ufe0f\u200d\U0001F308", "\U0001F9D1\U0001F3FF\u200d\U0001F680",
          "emoji \U0001F680\U0001F525 and ZWJ \U0001F469\u200d\U0001F4BB", "\U0001F642" * 30,
          "I \u2764\ufe0f NY \U0001F5FD!"]
    # Combining marks.
    t += ["e\u0301", "a\u0308\u0304", "Z\u0324\u0308", "h\u0338\u0322e\u0337l\u0336l\u0335o\u0334",
          "n\u0303o", "\u1100\u1161\u11a8", "\u0915\u093f", "\u0301start", "x \u0301"]
    # Right-to-left and mixed.
    t += ["abc \u05e9\u05dc\u05d5\u05dd 123 \u0639\u0631\u0628\u064a", "\u202ertl override\u202c",
          "mix\u4e2d\u6587English\u65e5\u672c\u8a9e123"]
    # Special-token markup.
    t += ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>",
          "<|im_start|><|im_end|>", "a<|im_end|>b", " <|im_end|> ", "<|im_end", "<|im_end|><|im_end|>",
          "<|im_start|>system\nYou are helpful.<|im_end|>",
          "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n", "<bos>hello", "<eos>",
          "<pad><unk><mask>", "<start_of_image>", "[multimodal]", "<unused0> <unused99>",
          "<repo_name>x<file_sep>y", "</s>", "<s>", "<h1>Title</h1>", "<end_of_turn>\n\n",
          "text<end_of_turn>more"]
    # Long words and text.
    t += ["a" * 500, "ab" * 300, "supercalifragilisticexpialidocious" * 10,
          "Pneumonoultramicroscopicsilicovolcanoconiosis",
          "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
          "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
          "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.",
          "The quick brown fox jumps over the lazy dog. " * 5]
    # Edges.
    t += ["", "a", "\x00", "a\x00b", "\x7f", "\x01\x02\x1f"]
    # The reference strings and prompts.
    t += ["Hello, world!", "na\u00efve caf\u00e9 r\u00e9sum\u00e9 \u2014 \u201cquotes\u201d",
          "tabs\tand\nnewlines\r\n", "The capital of France is", "def fibonacci(n):",
          "Once upon a time, in a small village,"]
    # Random combinations of atoms.
    atoms = [" ", "  ", "\n", "\t", "\r\n", "a", "A", "word", "1", "12", "1234", "'s", "'S", "'ll",
             "!", "?!", ".", "\u00e9", "\u4e2d", "\U0001F642", "\u00a0", "\u0301", "\u05e9",
             "<|im_end|>", "<end_of_turn>", "_", "-", "$", "\u0663"]
    rng = random.Random(1234)
    for _ in range(150):
        t.append("".join(rng.choice(atoms) for _ in range(rng.randint(2, 8))))
    seen, out = set(), []
    for s in t:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


CACHE_PATH = os.environ.get("GEN_CACHE", "/tmp/llorchd-gen-tokenizer-cache.json")
try:
    CACHE = json.load(open(CACHE_PATH))
except (OSError, ValueError):
    CACHE = {}


def run(model, text, *extra):
    """llama-tokenize's stdout and stderr, memoized on disk (reruns are slow)."""
    key = json.dumps([os.path.basename(model), os.path.getsize(model), text, extra])
    if key in CACHE:
        out, err = CACHE[key]
        return bytes.fromhex(out), bytes.fromhex(err)
    out, err = run_uncached(model, text, *extra)
    CACHE[key] = [out.hex(), err.hex()]
    if len(CACHE) % 50 == 0:
        save_cache()
    return out, err


def save_cache():
    with open(CACHE_PATH + ".tmp", "w") as f:
        json.dump(CACHE, f)
    os.replace(CACHE_PATH + ".tmp", CACHE_PATH)


def run_uncached(model, text, *extra):
    with tempfile.NamedTemporaryFile("wb", delete=False) as f:
        f.write(text.encode("utf-8"))
        path = f.name
    try:
        r = subprocess.run([os.path.join(BIN, "llama-tokenize"), "-m", model, "-f", path,
                            "--no-escape", "-lv", "5", *extra], capture_output=True, check=True)
    finally:
        os.unlink(path)
    return r.stdout, r.stderr


def ids_of(model, text, *extra):
    out, _ = run(model, text, "--ids", *extra)
    return json.loads(out.decode())


HEADER = re.compile(rb"^ *(\d+) -> '", re.M)


def ids_and_pieces(model, text):
    """Parse llama-tokenize's listing: `%6d -> '<piece>'` per token."""
    out, err = run(model, text)
    heads = list(HEADER.finditer(out))
    ids, pieces = [], []
    for i, h in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(out)
        body = out[h.end():end]
        assert body.endswith(b"'\n"), body
        ids.append(int(h.group(1)))
        pieces.append(body[:-2])
    return ids, pieces, err


def eog_of(stderr):
    return sorted(int(m) for m in re.findall(rb"load:   - (\d+) \(", stderr))


# A vocab-only GGUF: the source's metadata with overrides, no tensors.
def kv_entries(path):
    d = open(path, "rb").read(64 << 20)
    p = 0

    def u(fmt):
        nonlocal p
        v = struct.unpack_from("<" + fmt, d, p)
        p += struct.calcsize(fmt)
        return v[0]

    size = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip(t):
        nonlocal p
        if t == 8:
            n = u("Q")
            p += n
        elif t == 9:
            et, n = u("I"), u("Q")
            if et in size:
                p += size[et] * n
            else:
                for _ in range(n):
                    skip(et)
        else:
            p += size[t]

    p = 4
    u("I")
    u("Q")
    n_kv = u("Q")
    out = []
    for _ in range(n_kv):
        start = p
        n = u("Q")
        key = d[p:p + n].decode()
        p += n
        skip(u("I"))
        out.append((key, d[start:p]))
    return out


def enc_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv_value(key, value):
    if isinstance(value, bool):
        return enc_str(key) + struct.pack("<I", 7) + bytes([value])
    return enc_str(key) + struct.pack("<I", 8) + enc_str(value)


def write_variant(src, dst, overrides):
    entries = []
    pending = dict(overrides)
    for key, raw in kv_entries(src):
        entries.append(kv_value(key, pending.pop(key)) if key in pending else raw)
    entries += [kv_value(k, v) for k, v in pending.items()]
    with open(dst, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, len(entries)))
        for e in entries:
            f.write(e)
        f.write(b"\0" * (-f.tell() % 32))


def batched(model, texts, sep, sep_id, strip_bos):
    ids = ids_of(model, sep.join(texts))
    if strip_bos is not None:
        assert ids[0] == strip_bos
        ids = ids[1:]
    segs, cur = [], []
    for i in ids:
        if i == sep_id:
            segs.append(cur)
            cur = []
        else:
            cur.append(i)
    segs.append(cur)
    assert len(segs) == len(texts), (len(segs), len(texts))
    return segs


def main():
    texts = corpus()
    data = {
        "about": "Generated by the dev-only script tests/data/gen_tokenizer_cases.py from "
                 "llama.cpp (llama-cpp-python 0.3.36 vendor build): llama-tokenize's ids, "
                 "pieces and EOG ids. Facts the tokenizer must match; do not edit by hand.",
        "texts": texts,
        "models": {},
        "variants": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        smol = os.path.join(MODELS, REAL["smollm2"])
        usable = [i for i, s in enumerate(texts) if "<|endoftext|>" not in s and "\x00" not in s]
        for pre in SMOLLM_PRE_VARIANTS:
            dst = os.path.join(tmp, pre + ".gguf")
            write_variant(smol, dst, {"tokenizer.ggml.pre": pre})
            segs = batched(dst, [texts[i] for i in usable], "<|endoftext|>", 0, None)
            for i in usable[:15]:
                assert segs[usable.index(i)] == ids_of(dst, texts[i]), (pre, texts[i])
            data["variants"].append({
                "base": "smollm2", "set": {"tokenizer.ggml.pre": pre}, "add_special": True,
                "cases": [{"t": i, "ids": s} for i, s in zip(usable, segs)]})
            print("variant", pre, file=sys.stderr)
        gemma = os.path.join(MODELS, REAL["gemma3"])
        dst = os.path.join(tmp, "gemma-prefix.gguf")
        write_variant(gemma, dst, {"tokenizer.ggml.add_space_prefix": True})
        usable = [i for i, s in enumerate(texts) if "<eos>" not in s and "\x00" not in s]
        segs = batched(dst, [texts[i] for i in usable], "<eos>", 1, 2)
        for i in usable[:10]:
            assert [2] + segs[usable.index(i)] == ids_of(dst, texts[i]), texts[i]
        data["variants"].append({
            "base": "gemma3", "set": {"tokenizer.ggml.add_space_prefix": True}, "add_special": False,
            "cases": [{"t": i, "ids": s} for i, s in zip(usable, segs)]})

    for name, file in REAL.items():
        path = os.path.join(MODELS, file)
        cases, pieces, eog = [], {}, None
        for i, text in enumerate(texts):
            ids, ps, err = ids_and_pieces(path, text)
            if i < 20:
                assert ids == ids_of(path, text), text
            if eog is None:
                eog = eog_of(err)
            cases.append({"t": i, "ids": ids})
            if "\x00" not in text:
                for tid, pc in zip(ids, ps):
                    pieces[str(tid)] = pc.hex()
            if "<" in text or "[" in text:
                cases.append({"t": i, "parse_special": False,
                              "ids": ids_of(path, text, "--no-parse-special")})
            if "\n" in text and i % 4 == 0:
                cases.append({"t": i, "add_special": False, "ids": ids_of(path, text, "--no-bos")})
        data["models"][name] = {"file": file, "eog": eog, "cases": cases, "pieces": pieces}
        print(name, len(cases), "cases", file=sys.stderr)

    save_cache()
    out = os.path.join(HERE, "tokenizer-cases.json")
    with open(out, "w") as f:
        f.write("{\n")
        f.write('"about": %s,\n' % json.dumps(data["about"]))
        f.write('"texts": [\n%s\n],\n' % ",\n".join(json.dumps(t) for t in texts))
        f.write('"models": {\n')
        ms = []
        for name, m in data["models"].items():
            ms.append('%s: {"file": %s, "eog": %s,\n"cases": [\n%s\n],\n"pieces": %s}' % (
                json.dumps(name), json.dumps(m["file"]), json.dumps(m["eog"]),
                ",\n".join(json.dumps(c, separators=(",", ":")) for c in m["cases"]),
                json.dumps(m["pieces"], separators=(",", ":"))))
        f.write(",\n".join(ms) + "\n},\n")
        f.write('"variants": [\n%s\n]\n}\n' % ",\n".join(json.dumps(v, separators=(",", ":")) for v in data["variants"]))
    print("wrote", out, file=sys.stderr)


if __name__ == "__main__":
    main()
