#!/usr/bin/env python3
"""Reference ids for the Qwen3 tokenizer, from the Hugging Face `tokenizers` library.

    $(tools/reference/setup-venv) tools/reference/qwen3_tokenizer.py            # write the corpus
    $(tools/reference/setup-venv) tools/reference/qwen3_tokenizer.py --unicode-tables

Default mode builds a corpus of strings deterministically (fixed seed, hand-written seeds below)
and writes tests/fixtures/qwen3_tokenizer/corpus.jsonl: one JSON object per line,
{"text": ..., "ids": [...]}, ids from tokenizer.encode(text, add_special_tokens=False) (no eos).
tests/unit/test_tokenizer.c requires gpu_worker/eb_tokenizer.c to give the same ids.

--unicode-tables prints the C tables between the GENERATED markers in gpu_worker/eb_tokenizer.c.
tokenizers runs its split regex with Oniguruma (Unicode 16 tables) and NFC with an older
normalisation crate; we run PCRE2 and utf8proc, whose tables are from other Unicode versions. The
tables list where they disagree, found by asking both sides about every code point (the system
libpcre2-8 and libutf8proc through ctypes, tokenizers directly). Rerun when tokenizers, PCRE2 or
utf8proc change, and paste the output over the old block.
"""
import argparse
import ctypes
import ctypes.util
import json
import os
import random
import sys
import unicodedata

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOKENIZER_JSON = os.path.join(ROOT, "models", "qwen3-tokenizer", "tokenizer.json")
OUT = os.path.join(ROOT, "tests", "fixtures", "qwen3_tokenizer", "corpus.jsonl")
SEED = 20261128

# ---- hand-written seeds ------------------------------------------------------------------------

SEEDS = [
    # Latin with diacritics, precomposed
    "Crème brûlée à la façon de grand-mère", "Ångström, Øresund, Æble", "Größe: naïve café über",
    "Ñandú, pingüino, acción", "Žluťoučký kůň úpěl ďábelské ódy", "Zażółć gęślą jaźń",
    "Árvíztűrő tükörfúrógép", "Şişli'de çay içtik, ğ ı İ", "Việt Nam xin chào, Hà Nội",
    "Ça va? Où est l'hôtel? C'est très bien.",
    # Cyrillic, Greek
    "Съешь же ещё этих мягких французских булок, да выпей чаю.", "Привет, мир! Ёжик в тумане.",
    "Україна, Київ — їжак ґанок", "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.", "Καλημέρα κόσμε, ΆΈΉΊΌΎΏ ΐΰ",
    # Arabic, Hebrew, Hindi
    "مرحبا بالعالم، كيف حالك؟", "اللُّغَةُ العَرَبِيَّةُ جَمِيلَةٌ", "שלום עולם, מה נשמע?",
    "नमस्ते दुनिया, आप कैसे हैं?", "हिन्दी में क़िताब और ज़िंदगी", "क्षत्रिय श्रृंगार द्वारा",
    "বাংলা ভাষা, কোরবানি", "தமிழ் மொழி", "ગુજરાતી લિપિ",
    # CJK, Thai
    "我爱北京天安门，天安门上太阳升。", "机器学习模型的向量嵌入服务", "繁體中文與简体中文混合使用",
    "東京タワーは日本の電波塔です。", "ひらがなとカタカナ、そして漢字。ｶﾀｶﾅ半角", "日本語の文章を書きます",
    "한국어 텍스트를 토큰화합니다.", "안녕하세요, 세계! 반갑습니다", "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    "สวัสดีครับ ยินดีต้อนรับ",
    # emoji
    "I ❤️ NY 🗽", "👨‍👩‍👧‍👦 family", "👩🏽‍💻 coder 👍🏻👍🏼👍🏽👍🏾👍🏿", "🇩🇪 🇫🇷 🇯🇵 🇺🇸 🏳️‍🌈 🏴‍☠️",
    "🏴󠁧󠁢󠁳󠁣󠁴󠁿 Scotland", "😀😃😄😁😆😅🤣😂", "🧑‍🤝‍🧑 ✋🏿 🫶", "⌚⏰☕ ♻️ ✔️ ✅ ❌ 1️⃣ #️⃣",
    # combining marks in decomposed form (NFC composes them)
    "Cafe\u0301 cre\u0300me bru\u0302le\u0301e", "n\u0303 a\u0308 o\u0308 u\u0308 A\u030a",
    "\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af", "e\u0323\u0302 a\u0328\u0301 q\u0307\u0323",
    "\u0915\u093c \u0916\u093c \u095b", "\u09c7\u09be \u0b47\u0b3e \u0dd9\u0dcf", "A\u030a\u0301 Å Å",
    "\u03b1\u0313\u0301\u0345 \u1f84", "x\u0301\u0301\u0301\u0316\u0316", "\uf900\uf901 \u2126 \u212b",
    # digits, numbers
    "1234567890", "3.14159265358979323846264338327950288419716939937510",
    "Call +1 (555) 123-4567 or 0800 123 456", "2026-11-28T20:10:01.123456Z", "١٢٣٤٥ ٦٧٨٩٠ ۱۲۳",
    "१२३४ ๑๒๓ ①②③ Ⅻ ½ ¾ ²³", "Price: $1,234,567.89 (≈ €1.1M)",
    # whitespace
    "a  b   c    d", "\ttab\tseparated\tvalues\t", "line one\r\nline two\r\n", "trailing spaces   ",
    "   leading spaces", "\n\n\nthree newlines", "mixed \t \n \r\n  \u00a0 nbsp\u3000ideographic",
    "\u2028line sep\u2029para sep\u0085nel", "x\u000by\u000cz", "  \n  \n", " ", "  ", "\t", "\r\n",
    # code
    "def f(x):\n    return x ** 2  # square\n", "int main(void) { printf(\"%d\\n\", 42); return 0; }",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}", "SELECT id, name FROM users WHERE age >= 18;",
    "const x = () => { return {a: 1, 'b': [2, 3]}; };", "<div class=\"x\">Hello &amp; bye</div>",
    "{\"key\": [1, 2.5e-3, null, true], \"s\": \"\\u00e9\"}", "$ ls -la /usr/local/bin | grep -v '^d'",
    "#include <stdio.h>\r\n#define MAX(a,b) ((a)>(b)?(a):(b))", "x+=1;y-=2;z*=3;w/=4;v%=5;u**=6;",
    "https://example.com/path?q=embroker&lang=de#frag", "user.name+tag@example.co.uk",
    # contractions, mixed case
    "I'm sure you'll see it's what they've done, we'd say.", "DON'T SHOUT, IT'S LOUD 'S 'T 'RE 'VE 'M 'LL 'D",
    "She'S we'Ll They'RE I'Ve you'D", "'s's's'tt 'll'LL'lL", "rock 'n' roll, 'quoted', ''double''",
    "x'ſ y'ſt K'M", "O'Neil's café's",
    # special tokens inside text
    "<|endoftext|>", "Hello<|endoftext|>world", "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "a<|im_end|><|im_end|>b", "<|endoftext|><|endoftext|>", "<|endoftext|", "|endoftext|>",
    "<tool_call>{\"name\": \"f\"}</tool_call>", "<think>hmm</think> answer", "<|fim_prefix|>x<|fim_suffix|>y<|fim_middle|>",
    "< |endoftext|>", "<<|im_start|>>", " <|im_start|> spaced ",
    # product catalogue
    "Nike Air Max 90 — Size 42, 129,99 €", "Adidas Ultraboost 22 (Gr. 44 2/3) – 179,95 EUR",
    "Apple iPhone 15 Pro Max 256GB Titan Schwarz", "Samsung 65\" QLED 4K Q80C 2023 GQ65Q80CATXZG",
    "LEGO® Technic 42115 Lamborghini Sián FKP 37", "Bosch Professional GSR 18V-55 (2x 2,0 Ah) | 06019H5200",
    "T-Shirt \"Basic\" 100% Baumwolle, Gr. XL, Farbe: Dunkelblau/Navy", "Café Crème 1kg – Bohnen 🫘 ★★★★☆ (4.3)",
    "SKU: AB-12345-XYZ; EAN 4006381333931; UVP 19,99 €", "2x USB-C → HDMI Adapter 4K@60Hz, 15 cm",
    # misc punctuation, symbols
    "«Guillemets» „Anführungszeichen“ ‚einfach‘ 「括弧」", "— – ‐ … • · ‰ ′ ″ § ¶ † ‡", "←↑→↓ ∀∃∈∉ ∑∏√∞ ≤≥≠",
    "©®™ ℃ ℉ № ℗", "\u200b zero\u200bwidth \u200c\u200d \ufeff bom", "Mongolian\u180evowel sep", "\u180e a\u180eb", "x \u180e\u180e y\u180e", "z\u180e\n", "  \u180e", " \u180e!   \u180e\n",
    "", " x ", "!!!???...", "____----====", "ab",
    # Qwen3-Embedding query form (eb_tokenizer_format_query)
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:What is the capital of China?",
    "Instruct: Find products matching the description\nQuery:rote Sneaker Größe 42",
]

# Added-token flags Qwen3 leaves false; the flags test sets them on a copy of the file.
FLAGS = {
    "<|im_start|>": {"lstrip": True},
    "<|im_end|>": {"rstrip": True},
    "<think>": {"single_word": True},
    "</think>": {"lstrip": True, "rstrip": True},
    "<tool_call>": {"normalized": True},
}
FLAG_TEXTS = [
    "a <|im_start|>b", "a\t \n<|im_start|> b", "<|im_start|>", "x<|im_end|>  \n y", "x <|im_end|>",
    "word<think>word", "word <think> word", "<think>", "(<think>)", "_<think>", "é<think>",
    "a  </think>  b", "</think>", "a<|im_end|> </think> b", "e\u0301<tool_call>x", "<tool_call>",
    "<|im_start|> <|im_start|>  <|im_end|>   <|im_end|>", "  <|im_start|>  ", "x\u3000<|im_start|>",
]

# Seeds from scripts and blocks whose letters and numbers are newer than PCRE2's Unicode tables
# (CJK Ext. H/I, Egyptian Ext.-A, Kirat Rai, Garay, Tulu-Tigalari, ...), and marks newer than the
# tokenizers normaliser's tables: the places where our Unicode tables are patched.
NEW_UNICODE_RANGES = [
    (0x31350, 0x323AF), (0x2EBF0, 0x2EE5D), (0x13460, 0x143FA), (0x16D40, 0x16D79),
    (0x10D40, 0x10D8F), (0x11380, 0x113D3), (0x16100, 0x16139), (0x11BC0, 0x11BF9),
    (0x1E5D0, 0x1E5FA), (0x105C0, 0x105F3), (0x1E4D0, 0x1E4F9), (0x11F00, 0x11F59),
    (0x1E030, 0x1E08F), (0x1C89, 0x1C8A), (0xA7CB, 0xA7DC), (0x0897, 0x089F), (0x1AC1, 0x1ACE),
    (0x1DF6, 0x1DFA), (0x07FD, 0x07FD), (0x0C3C, 0x0C3C), (0x10F46, 0x10F50), (0x1E08F, 0x1E08F),
]


def brands_catalogue(rng):
    brands = ["Nike", "Adidas", "Puma", "Apple", "Samsung", "Sony", "Bosch", "Miele", "LEGO®",
              "Philips", "Dyson", "Levi's", "H&M", "Zara", "IKEA", "Xiaomi", "Huawei", "Asus"]
    things = ["Air Max", "Ultraboost", "Suede Classic", "iPad Air", "Galaxy S24", "WH-1000XM5",
              "Akkuschrauber", "Waschmaschine", "Technic Set", "Rasierer", "V15 Detect", "501 Jeans",
              "Kapuzenpullover", "Sommerkleid", "KALLAX Regal", "Redmi Note", "MateBook", "ROG Strix"]
    colours = ["Schwarz", "Weiß", "Rot/Blau", "Navy", "Grün", "Beige", "Titan", "Roségold", "黑色",
               "белый", "gris anthracite"]
    sizes = ["Size 42", "Gr. 44 2/3", "XL", "M/L", "EU 38", "US 10.5", "256GB", "65\"", "1,5 l",
             "30×40 cm", "Ø 12 mm"]
    s = f"{rng.choice(brands)} {rng.choice(things)} {rng.randint(1, 999)}"
    if rng.random() < 0.7:
        s += rng.choice([" — ", " – ", ", ", " | ", " - "]) + rng.choice(sizes)
    if rng.random() < 0.6:
        s += ", " + rng.choice(colours)
    euros, cents = rng.randint(1, 4999), rng.randint(0, 99)
    price = rng.choice([f"{euros},{cents:02d} €", f"€{euros}.{cents:02d}", f"${euros}.{cents:02d}",
                        f"{euros:,}.{cents:02d} USD", f"¥{euros * 100}", f"{euros} ₽", f"£{euros}"])
    return s + rng.choice([", ", " ", " — ", "\t"]) + price


def random_unicode(rng, n, astral):
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.25:
            cp = rng.randint(0x20, 0x7E)
        elif r < 0.35:
            cp = ord(rng.choice(" \t\n\r'sStTlLdD0123"))
        elif r < 0.85 or not astral:
            cp = rng.randint(0x80, 0xFFFD)
        else:
            cp = rng.randint(0x10000, 0x10FFFD) if rng.random() < 0.3 else rng.randint(0x10000, 0x3FFFF)
        if 0xD800 <= cp <= 0xDFFF or cp == 0:
            cp = 0x41
        out.append(chr(cp))
    return "".join(out)


def mutate(rng, s):
    ops = rng.randint(1, 3)
    for _ in range(ops):
        k = rng.randint(0, 7)
        if k == 0:
            s = s.upper()
        elif k == 1:
            s = s.lower()
        elif k == 2:
            s = "".join(c.upper() if rng.random() < 0.5 else c for c in s)
        elif k == 3:
            pos = rng.randint(0, len(s))
            s = s[:pos] + rng.choice(["  ", "\t", "\n", "\r\n", "   \n", " \u00a0", "\u3000"]) + s[pos:]
        elif k == 4:
            s = unicodedata.normalize("NFD", s)
        elif k == 5:
            s = s + rng.choice([" ", "  ", "\n", "\t", " \n "])
        elif k == 6:
            pos = rng.randint(0, len(s))
            s = s[:pos] + str(rng.randint(0, 10 ** rng.randint(1, 25))) + s[pos:]
        else:
            pos = rng.randint(0, len(s))
            s = s[:pos] + rng.choice(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "'S", "'ll", "'Re"]) + s[pos:]
    return s


def build_corpus():
    rng = random.Random(SEED)
    seeds = [s for s in SEEDS]
    corpus = list(seeds)
    corpus += [unicodedata.normalize("NFD", s) for s in seeds]
    corpus += [mutate(rng, rng.choice(seeds)) for _ in range(800)]
    for _ in range(450):  # joined seeds with separators
        parts = [rng.choice(seeds) for _ in range(rng.randint(2, 4))]
        seps = [" ", "\n", "\t", "\r\n", "  ", "<|endoftext|>", "<|im_end|>\n", ", ", " \n\n "]
        corpus.append("".join(p + rng.choice(seps) for p in parts).rstrip("\n") if rng.random() < 0.5
                      else rng.choice(seps).join(parts))
    corpus += [brands_catalogue(rng) for _ in range(250)]
    corpus += [random_unicode(rng, rng.randint(1, 40), astral=False) for _ in range(150)]
    corpus += [random_unicode(rng, rng.randint(1, 40), astral=True) for _ in range(150)]
    # numbers and whitespace runs
    corpus += [str(rng.randint(0, 10 ** rng.randint(1, 60))) for _ in range(40)]
    corpus += ["".join(rng.choice([" ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000"])
                       for _ in range(rng.randint(1, 12))) + rng.choice(["", "x", "1", "!"])
               for _ in range(60)]
    # newer Unicode: letters, numbers, marks where the tables are patched
    for _ in range(200):
        chars = []
        for _ in range(rng.randint(1, 12)):
            lo, hi = rng.choice(NEW_UNICODE_RANGES)
            r = rng.random()
            if r < 0.5:
                chars.append(chr(rng.randint(lo, hi)))
            else:
                chars.append(rng.choice(["a", "e\u0301", " ", ",", "1", "\u0316", "\u0334", "\u0301",
                                         "\u093c", "\u4e00", "'s", "x"]))
        corpus.append("".join(chars))
    # long strings (a few KB)
    for _ in range(8):
        parts = [rng.choice(seeds) for _ in range(rng.randint(40, 120))]
        corpus.append(rng.choice([" ", "\n", " \n"]).join(parts))
    corpus.append("a" * 3000)
    corpus.append("1" * 2000)
    corpus.append(" " * 1500 + "x")
    corpus.append("-" * 2500)
    corpus.append("我" * 1500)
    seen, out = set(), []
    for s in corpus:
        if "\x00" in s or s in seen:
            continue
        seen.add(s)
        out.append(s)
    return out


def write_corpus(tok_path, out_path):
    tok = Tokenizer.from_file(tok_path)
    corpus = build_corpus()
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        for s in corpus:
            ids = tok.encode(s, add_special_tokens=False).ids
            f.write(json.dumps({"text": s, "ids": ids}, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {len(corpus)} strings to {out_path} ({os.path.getsize(out_path)} bytes)")
    d = json.load(open(tok_path, encoding="utf-8"))
    for t in d["added_tokens"]:
        t.update(FLAGS.get(t["content"], {}))
    flagged = Tokenizer.from_str(json.dumps(d))
    flags_path = os.path.join(os.path.dirname(out_path), "added_flags.jsonl")
    with open(flags_path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"flags": FLAGS}, ensure_ascii=False) + "\n")
        for s in FLAG_TEXTS:
            ids = flagged.encode(s, add_special_tokens=False).ids
            f.write(json.dumps({"text": s, "ids": ids}, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {len(FLAG_TEXTS)} strings to {flags_path}")


# ---- Unicode tables ------------------------------------------------------------------------------

PCRE2_UTF = 0x00080000
PCRE2_UCP = 0x00020000


def _pcre2():
    lib = ctypes.CDLL(ctypes.util.find_library("pcre2-8") or "libpcre2-8.so.0")
    lib.pcre2_compile_8.restype = ctypes.c_void_p
    lib.pcre2_compile_8.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32,
                                    ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_size_t),
                                    ctypes.c_void_p]
    lib.pcre2_match_data_create_8.restype = ctypes.c_void_p
    lib.pcre2_match_data_create_8.argtypes = [ctypes.c_uint32, ctypes.c_void_p]
    lib.pcre2_match_8.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                                  ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p]
    return lib


def _ranges(cps):
    out = []
    for cp in sorted(cps):
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def unicode_tables(tok_path):
    d = json.load(open(tok_path, encoding="utf-8"))
    pat = d["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    split = pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False)
    nfc = normalizers.NFC()
    pcre = _pcre2()
    err, off = ctypes.c_int(), ctypes.c_size_t()
    re_l = pcre.pcre2_compile_8(b"^\\p{L}$", 7, PCRE2_UTF | PCRE2_UCP, ctypes.byref(err), ctypes.byref(off), None)
    re_n = pcre.pcre2_compile_8(b"^\\p{N}$", 7, PCRE2_UTF | PCRE2_UCP, ctypes.byref(err), ctypes.byref(off), None)
    md = pcre.pcre2_match_data_create_8(4, None)
    u8p = ctypes.CDLL(ctypes.util.find_library("utf8proc") or "libutf8proc.so.2")
    u8p.utf8proc_get_property.restype = ctypes.POINTER(ctypes.c_int16 * 6)
    u8p.utf8proc_NFD.restype = ctypes.c_void_p
    u8p.utf8proc_NFD.argtypes = [ctypes.c_char_p]
    libc = ctypes.CDLL(None)
    libc.free.argtypes = [ctypes.c_void_p]

    extra_l, extra_n, lost = [], [], []
    ccc_zero, no_compose = [], []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF or cp in (0x0A, 0x0D):
            continue
        c = chr(cp)
        b = c.encode("utf-8")
        # The split regex's view: "aXa" is one word iff X is a letter; three iff a number.
        n1 = len(split.pre_tokenize_str("a" + c + "a"))
        ref_l, ref_n = n1 == 1, n1 == 3
        our_l = pcre.pcre2_match_8(re_l, b, len(b), 0, 0, md, None) >= 0
        our_n = not our_l and pcre.pcre2_match_8(re_n, b, len(b), 0, 0, md, None) >= 0
        if ref_l and not our_l:
            extra_l.append(cp)
        elif ref_n and not our_n:
            extra_n.append(cp)
        elif (our_l and not ref_l) or (our_n and not ref_n):
            lost.append(cp)
        prop = u8p.utf8proc_get_property(cp).contents
        ccc, decomp_type, seqindex = prop[1], prop[3], prop[4] & 0xFFFF
        if ccc != 0:
            # A mark of another class next to it is reordered iff the normaliser knows the class.
            if ccc > 1:
                probe, moved = "\u4e00" + c + "\u0334", "\u4e00\u0334" + c
            else:
                probe, moved = "\u4e00\u0345" + c, "\u4e00" + c + "\u0345"
            # Compare normalised forms: singletons (U+0340 -> U+0300) decompose either way.
            if nfc.normalize_str(probe) != nfc.normalize_str(moved):
                ccc_zero.append(cp)
        if seqindex != 0xFFFF and decomp_type == 0:
            p = u8p.utf8proc_NFD(b)
            dec = ctypes.string_at(p).decode("utf-8")
            libc.free(p)
            if nfc.normalize_str(dec) != c and nfc.normalize_str(c) == c and len(dec) > 1:
                no_compose.append(cp)
    if lost:
        print(f"/* warning: {len(lost)} code points PCRE2 classes as L/N but tokenizers does not: "
              f"{[hex(x) for x in lost[:20]]} */", file=sys.stderr)

    def emit_ranges(name, cps, why):
        print(f"/* {why} */")
        print(f"static const uint32_t {name}[][2] = {{")
        rs = _ranges(cps)
        for i in range(0, len(rs), 4):
            print("    " + " ".join(f"{{0x{a:05X}, 0x{b:05X}}}," for a, b in rs[i:i + 4]))
        if not rs:
            print("    {0, 0},")
        print("};")

    print("/* BEGIN GENERATED by tools/reference/qwen3_tokenizer.py --unicode-tables */")
    emit_ranges("onig_extra_letter", extra_l, "letters (\\p{L}) for tokenizers, unassigned for PCRE2")
    emit_ranges("onig_extra_number", extra_n, "numbers (\\p{N}) for tokenizers, unassigned for PCRE2")
    emit_ranges("nfc_class_zero", ccc_zero,
                "marks utf8proc gives a combining class that tokenizers' NFC treats as 0")
    emit_ranges("nfc_no_compose", no_compose,
                "composites utf8proc composes that tokenizers' NFC does not know")
    print("/* END GENERATED */")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default=TOKENIZER_JSON)
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--unicode-tables", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(args.tokenizer):
        sys.exit(f"{args.tokenizer} missing: run scripts/setup first")
    if args.unicode_tables:
        unicode_tables(args.tokenizer)
    else:
        write_corpus(args.tokenizer, args.out)


if __name__ == "__main__":
    main()
