#!/usr/bin/python3
"""textdata.py: the English text behind `make base` and `make tasks` (standard library only).

    textdata.py corpus OUT_DIR   the base model's corpus: OUT_DIR/train.txt, OUT_DIR/val.txt and
                                 OUT_DIR/sources.tsv (sizes per source); scripts/base-corpus.sh
    textdata.py tasks OUT_DIR    the built-in evaluation tasks, one JSONL file each;
                                 scripts/make-tasks.sh

Both read only what Debian installs (bible-kjv, wordnet-base, dict-gcide, fortunes, fortunes-min)
and share one definition of what is held out, so that every test item of a task comes from text
the model it evaluates did not train on (docs/base-model.md, docs/tasks.md):

- King James: `make demo`'s corpus is the verses in order, one a line, and `fm data prepare` holds
  out its last 5% of lines (1,555 of 31,102 verses, Colossians 4:5 to Revelation 22:21). The base
  corpus holds out the same verses.
- WordNet: the synsets whose SHA-256 of "<data file letter><offset>" (e.g. "n02084071") falls in
  the lowest 5% are held out of the base corpus; the tasks' test items come from those.
- GCIDE articles and fortunes: 2% and 5% held out by the same kind of hash, so that the held-out
  bits per byte covers every source.
- Decontamination: a training document (a GCIDE paragraph, a fortune) that shares a run of 8 words
  with a held-out verse or a held-out WordNet gloss, or holds a whole held-out definition of 5 to 7
  words, is dropped. The tasks leave out held-out synsets whose definition is also a training
  synset's ("a genus of fish in the family Catostomidae").

Everything is deterministic: files are read in a fixed order, hashes decide what is held out, and
every random choice comes from random.Random with a fixed seed.
"""
import gzip
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import unicodedata
from collections import Counter, defaultdict

KJV_CMD = ["bible", "-m", "8192", "-l4000", "Gen1:1-Rev22:21"]  # as scripts/demo.sh runs it
# fm data prepare's default --val-fraction is the float 0.05f; it holds out
# (size_t)(lines * (double)0.05f + 0.5) lines.
DEMO_VAL_FRACTION = 0.0500000007450580596923828125
WORDNET = "/usr/share/wordnet"
GCIDE = "/usr/share/dictd/gcide"
FORTUNES = "/usr/share/games/fortunes"
# fortunes files left out: pictures made of characters, and Latin to translate
FORTUNES_SKIP = {"ascii-art", "translate-me"}
WN_HELD_PER_MILLE = 50
GCIDE_HELD_PER_MILLE = 20
FORTUNE_HELD_PER_MILLE = 50
NGRAM = 8
POS_NAME = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
FILE_LETTER = {"n": "n", "v": "v", "a": "a", "s": "a", "r": "r"}


def die(msg):
    sys.stderr.write("textdata.py: %s\n" % msg)
    sys.exit(1)


def held_out(key, per_mille):
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 1000 < per_mille


def words_of(text):
    """Lower-case words (letters, digits, apostrophes) for the n-gram overlap checks."""
    return re.findall(r"[a-z0-9']+", text.lower())


def ngrams(words, n=NGRAM):
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


# ---------------------------------------------------------------------------------------------
# King James


def kjv_verses():
    """[(book, chapter, verse, text)] in canonical order, exactly the lines demo.sh's sed keeps."""
    try:
        raw = subprocess.run(KJV_CMD, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        die("cannot run 'bible' (%s): install bible-kjv with scripts/install-deps.sh --base" % e)
    verses, book, chapter = [], None, None
    for line in raw.decode("utf-8").split("\n"):
        m = re.match(r"^(\S.*) (\d+)$", line)
        if m:
            book, chapter = m.group(1), int(m.group(2))
            continue
        m = re.match(r"^ +(\d+) (.*)$", line)
        if m:
            verses.append((book, chapter, int(m.group(1)), m.group(2)))
    if len(verses) != 31102:
        die("bible printed %d verses, expected 31102" % len(verses))
    return verses


def kjv_split(verses):
    """(train, held): demo.sh's fm data prepare holds out the last 5% of the verse lines."""
    n_held = int(len(verses) * DEMO_VAL_FRACTION + 0.5)
    return verses[:len(verses) - n_held], verses[len(verses) - n_held:]


def kjv_chapters(verses):
    """Groups consecutive verses by (book, chapter): [(book, chapter, [texts])]."""
    out = []
    for b, c, _, t in verses:
        if not out or out[-1][0] != b or out[-1][1] != c:
            out.append((b, c, []))
        out[-1][2].append(t)
    return out


def kjv_documents(verses):
    """The base corpus's King James text: each chapter a paragraph headed "Book N"."""
    return ["%s %d\n%s" % (b, c, "\n".join(ts)) for b, c, ts in kjv_chapters(verses)]


# ---------------------------------------------------------------------------------------------
# WordNet


class Synset:
    __slots__ = ("key", "pos", "lemmas", "raw_lemmas", "gloss", "definition", "ptrs", "familiar", "held")


def clean_lemma(w):
    return re.sub(r"\((a|p|ip)\)$", "", w).replace("_", " ")


def wordnet():
    """{key: Synset} in file order (noun, verb, adjective, adverb files; offsets ascending)."""
    tagged = set()  # (lemma, pos) with senses tagged in SemCor: the familiar words
    for f in ("noun", "verb", "adj", "adv"):
        path = os.path.join(WORDNET, "index." + f)
        if not os.path.exists(path):
            die("%s missing: install wordnet-base with scripts/install-deps.sh --base" % path)
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("  "):
                    continue
                p = line.split()
                pc = int(p[3])
                if int(p[5 + pc]) > 0:
                    tagged.add((p[0], p[1]))
    synsets = {}
    for f in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(WORDNET, "data." + f), encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("  "):
                    continue
                head, gloss = line.rstrip("\n").split(" | ", 1)
                p = head.split()
                s = Synset()
                s.pos = p[2]
                s.key = FILE_LETTER[s.pos] + p[0]
                n = int(p[3], 16)
                s.raw_lemmas = [p[4 + 2 * i] for i in range(n)]
                s.lemmas = [clean_lemma(w) for w in s.raw_lemmas]
                i = 4 + 2 * n
                pc = int(p[i])
                s.ptrs = [(p[i + 1 + 4 * k], FILE_LETTER[p[i + 3 + 4 * k]] + p[i + 2 + 4 * k], p[i + 4 + 4 * k])
                          for k in range(pc)]
                s.gloss = gloss.strip()
                # the definition: the gloss before its first quoted example
                s.definition = re.split(r';?\s*"', s.gloss, 1)[0].strip().rstrip(";").strip()
                tpos = "a" if s.pos == "s" else s.pos
                s.familiar = any((re.sub(r"\((a|p|ip)\)$", "", w).lower(), tpos) in tagged for w in s.raw_lemmas)
                s.held = held_out(s.key, WN_HELD_PER_MILLE)
                synsets[s.key] = s
    return synsets


def wn_line(s):
    return "%s (%s): %s" % (", ".join(s.lemmas), POS_NAME[s.pos], s.gloss)


# ---------------------------------------------------------------------------------------------
# GCIDE

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
MARKS = {"'": "\u0301", "`": "\u0300", '"': "\u0308", "~": "\u0303", ",": "\u0327", "^": "\u0302",
         "=": "\u0304", ".": "\u0323", "*": "\u030a"}
CODES = {"ae": "ae", "AE": "Ae", "oe": "oe", "OE": "Oe", "deg": "\u00b0", "sect": "\u00a7", "pounds": "\u00a3",
         "root": "\u221a", "eth": "\u00f0", "thorn": "\u00fe", "yogh": "\u021d", "imac": "\u012b", "aum": "\u00e4",
         "add": "a", "udd": "u", "asl": "a", "ng": "ng", "th": "th", "=ae": "ae", "=oo": "oo", "oo^": "oo",
         "dsdot": "d", "bprime": "b", "frac12": "1/2", "frac14": "1/4", "frac34": "3/4", "times": "\u00d7",
         "min": "\u2032", "sec": "\u2033", "flat": "\u266d", "sharp": "\u266f", "crescent": "\u263e"}
GREEK = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega").split()


def b64(s):
    v = 0
    for c in s:
        v = v * 64 + B64.index(c)
    return v


def gcide_code(m):
    c = m.group(1)
    if c in CODES:
        return CODES[c]
    if c.lower() in GREEK:
        i = GREEK.index(c.lower())
        return chr((0x391 if c[0].isupper() else 0x3b1) + i + (1 if i >= 17 else 0))
    mm = re.fullmatch(r"([`'\"~,^=.*-]?)([A-Za-z])([`'\"~,^=.*-]?)", c)
    if mm and (mm.group(1) or mm.group(3)):
        mark = MARKS.get(mm.group(1) or mm.group(3), "")
        return unicodedata.normalize("NFC", mm.group(2) + mark)
    return m.group(0)  # not a character code: a label or an etymology, removed with the brackets


def gcide_clean(text):
    # pronunciations \Ab"a*cus\ and a phonetic spelling in parentheses right after one
    s = re.sub(r"\\[^\\]{1,100}\\( ?\([^()\n]*\))?", "", text)
    s = re.sub(r"\[([^\[\]\s]{1,8})\]", gcide_code, s)
    while True:  # etymologies, labels and source notes: [...] groups, innermost first
        t = re.sub(r"\[[^\[\]]*\]", "", s)
        if t == s:
            break
        s = t
    s = s.replace("{", "").replace("}", "").replace("[", "").replace("]", "")
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r" ([,;:.])", r"\1", s)
    s = re.sub(r"\( *\)", "", s)
    s = re.sub(r"^([^,(]+?) ,", r"\1,", s)
    return re.sub(r"\s+", " ", s).strip()


SOURCE_LINE = re.compile(r"^\s*\[[^\]]*\]\s*$")
# a quotation's attribution to a book of the Bible, as Webster writes it: "--Rev. xxi. 4"
BIBLE_REF = re.compile(r"\"[^\"]*\"\s*--\s*(\d\s*)?[A-Z][a-z]+\.?\s+[ivxlc]+\.\s*\d+\.?")


def gcide_articles():
    """[(first index word, [blocks of text, cleaned])] in dictionary order. An article is cut into
    blocks at blank lines and at its source notes ("[1913 Webster]" on a line of its own); a block
    without a note takes the next one's. Blocks whose note names WordNet are dropped (WordNet is a
    source of its own, and its held-out glosses must not come back through GCIDE), and so are
    quotations: blocks indented 8 or more with an attribution ("--Pope.")."""
    if not os.path.exists(GCIDE + ".index"):
        die("%s.index missing: install dict-gcide with scripts/install-deps.sh --base" % GCIDE)
    raw = gzip.open(GCIDE + ".dict.dz").read()  # dictzip is gzip-compatible
    spans = {}
    with open(GCIDE + ".index", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            w, o, n = line.rstrip("\n").split("\t")
            if w.startswith("00-database") or w == "0":
                continue
            spans.setdefault((b64(o), b64(n)), w)
    articles, dropped_wn = [], 0
    for (o, n), w in sorted(spans.items()):
        text = raw[o:o + n].decode("utf-8", errors="replace").replace("\ufffd", "'")
        if re.match(r"\s*00-?database", text):
            continue  # the database's own notices
        blocks, cur = [], []
        for line in text.split("\n"):
            if SOURCE_LINE.match(line):
                blocks.append([cur, line.strip()])
                cur = []
            elif not line.strip():
                if cur:
                    blocks.append([cur, None])
                cur = []
            else:
                cur.append(line)
        if cur:
            blocks.append([cur, None])
        note = None
        for blk in reversed(blocks):
            note = blk[1] = blk[1] or note
        paras = []
        for k, (lines, note) in enumerate(blocks):
            if not lines:
                continue
            if note and "WordNet" in note:
                dropped_wn += 1
                continue
            if k > 0 and len(lines[0]) - len(lines[0].lstrip()) >= 8 and "--" in "".join(lines):
                continue  # a quotation under a sense
            t = gcide_clean(BIBLE_REF.sub("", "\n".join(lines)))
            if t:
                paras.append(t)
        if paras:
            articles.append((w, paras))
    return articles, dropped_wn


# ---------------------------------------------------------------------------------------------
# fortunes


def fortunes():
    """[(file, text)]: every fortune of every file, files in name order; offensive ones (off/) are
    not read. Overstriking (x BACKSPACE y) and other control characters are removed."""
    if not os.path.isdir(FORTUNES):
        die("%s missing: install fortunes and fortunes-min with scripts/install-deps.sh --base" % FORTUNES)
    out = []
    for name in sorted(os.listdir(FORTUNES)):
        path = os.path.join(FORTUNES, name)
        if "." in name or name in FORTUNES_SKIP or os.path.islink(path) or not os.path.isfile(path):
            continue
        b = open(path, "rb").read()
        try:
            s = b.decode("utf-8")
        except UnicodeDecodeError:
            s = b.decode("latin-1")
        while True:
            t = re.sub(r"[^\n\x08]\x08", "", s)
            if t == s:
                break
            s = t
        s = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", s)
        for f in re.split(r"^%\s*$", s, flags=re.M):
            lines = [l.rstrip() for l in f.split("\n")]
            text = "\n".join(l for l in lines if l.strip())
            if text:
                out.append((name, text))
    return out


# ---------------------------------------------------------------------------------------------
# the base corpus


def corpus(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    verses = kjv_verses()
    kjv_train, kjv_held = kjv_split(verses)
    wn = wordnet()
    # what the tasks test on: held-out verses and held-out WordNet glosses; a training document of
    # another source sharing NGRAM words in a row with one of them, or the whole of a held-out
    # definition of 5 to NGRAM - 1 words, is dropped
    protected = defaultdict(set)  # n -> word n-grams
    for v in kjv_held:
        protected[NGRAM] |= ngrams(words_of(v[3]))
    for s in wn.values():
        if s.held:
            protected[NGRAM] |= ngrams(words_of(s.gloss))
            d = words_of(s.definition)
            if 5 <= len(d) < NGRAM:
                protected[len(d)].add(" ".join(d))

    def contaminated(text):
        w = words_of(text)
        return any(" ".join(w[i:i + n]) in grams for n, grams in protected.items() for i in range(len(w) - n + 1))

    sections = []  # (source, train docs, val docs, dropped, separator)
    sections.append(("kjv", kjv_documents(kjv_train), kjv_documents(kjv_held), 0, "\n\n"))
    wtrain = [wn_line(s) for s in wn.values() if not s.held]
    wval = [wn_line(s) for s in wn.values() if s.held]
    sections.append(("wordnet", wtrain, wval, 0, "\n"))
    articles, dropped_wn = gcide_articles()
    gtrain, gval, gdrop = [], [], 0
    for w, paras in articles:
        if held_out("gcide:%s:%s" % (w, paras[0][:200]), GCIDE_HELD_PER_MILLE):
            gval.append(" ".join(paras))
            continue
        keep = [p for p in paras if not contaminated(p)]
        gdrop += len(paras) - len(keep)
        if keep:
            gtrain.append(" ".join(keep))
    sections.append(("gcide", gtrain, gval, gdrop, "\n"))
    ftrain, fval, fdrop = [], [], 0
    for name, text in fortunes():
        if held_out("fortune:" + text, FORTUNE_HELD_PER_MILLE):
            fval.append(text)
        elif contaminated(text):
            fdrop += 1
        else:
            ftrain.append(text)
    sections.append(("fortunes", ftrain, fval, fdrop, "\n\n"))

    raw_bytes = {
        "kjv": os.path.getsize("/usr/lib/bible.data"),  # compressed, with its own index
        "wordnet": sum(os.path.getsize(os.path.join(WORDNET, "data." + f)) for f in ("noun", "verb", "adj", "adv")),
        "gcide": os.path.getsize(GCIDE + ".dict.dz"),
        "fortunes": sum(os.path.getsize(os.path.join(FORTUNES, n)) for n in os.listdir(FORTUNES)
                        if "." not in n and n not in FORTUNES_SKIP and os.path.isfile(os.path.join(FORTUNES, n))),
    }
    rows = ["source\tpackage_bytes\ttrain_docs\ttrain_lines\ttrain_bytes\tval_docs\tval_lines\tval_bytes\tdropped"]
    train_path, val_path = os.path.join(out_dir, "train.txt"), os.path.join(out_dir, "val.txt")
    with open(train_path + ".tmp", "w", encoding="utf-8") as tr, open(val_path + ".tmp", "w", encoding="utf-8") as va:
        for k, (name, train, val, dropped, sep) in enumerate(sections):
            # a blank line between sources; documents within one joined by sep; ends in a newline
            t = ("\n" if k else "") + sep.join(train) + "\n"
            v = ("\n" if k else "") + sep.join(val) + "\n"
            tr.write(t)
            va.write(v)
            rows.append("%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d" % (
                name, raw_bytes[name], len(train), t.count("\n"), len(t.encode("utf-8")),
                len(val), v.count("\n"), len(v.encode("utf-8")), dropped))
    os.replace(train_path + ".tmp", train_path)
    os.replace(val_path + ".tmp", val_path)
    with open(os.path.join(out_dir, "sources.tsv"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(rows) + "\n")
    sys.stdout.write("\n".join(rows) + "\n")
    sys.stdout.write("GCIDE paragraphs taken from WordNet, left out: %d\n" % dropped_wn)


# ---------------------------------------------------------------------------------------------
# tasks


def write_task(out_dir, settings, fewshot, test):
    path = os.path.join(out_dir, settings["task"] + ".jsonl")
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(json.dumps(settings, ensure_ascii=False) + "\n")
        for split, items in (("fewshot", fewshot), ("test", test)):
            for it in items:
                it = dict(it)
                it["split"] = split
                fh.write(json.dumps(it, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)  # a whole file or none
    return (settings["task"], settings["type"], settings.get("chance"), len(fewshot), len(test))


def mc_item(rng, query, gold_text, distractors):
    choices = distractors + [gold_text]
    rng.shuffle(choices)
    return {"query": query, "choices": choices, "gold": choices.index(gold_text)}


def kjv_tasks(out_dir, rng_seed=13):
    verses = kjv_verses()
    train, held = kjv_split(verses)
    train_texts = set(v[3] for v in train)
    made = []

    # (a) cloze: the words before a blank are the query; each choice is a word of similar
    # frequency in the training verses and the rest of the verse
    counts = Counter()
    train6 = set()
    for v in train:
        ws = v[3].split(" ")
        for w in ws:
            m = re.match(r"^([A-Za-z]+)[^A-Za-z]*$", w)
            if m:
                counts[m.group(1)] += 1
        train6 |= ngrams(words_of(v[3]), 6)
    lower_counts = Counter()
    for w, c in counts.items():
        lower_counts[w.lower()] += c
    common = set(w for w, _ in lower_counts.most_common(100))

    def shape(w):
        return "upper" if w.isupper() else "title" if w[0].isupper() else "lower" if w.islower() else "mixed"

    ranked = defaultdict(list)
    for w, c in sorted(counts.items(), key=lambda x: (-x[1], x[0])):
        if len(w) >= 3:
            ranked[shape(w)].append(w)
    rank_of = {w: i for lst in ranked.values() for i, w in enumerate(lst)}

    def cloze(rng, v, check_unseen):
        ws = v[3].split(" ")
        cands = []
        for k in range(3, len(ws) - 2):
            m = re.match(r"^([A-Za-z]+)([^A-Za-z]*)$", ws[k])
            if not m or len(m.group(1)) < 3 or m.group(1).lower() in common or counts[m.group(1)] < 3:
                continue
            if check_unseen and " ".join(words_of(" ".join(ws[k - 3:k + 3]))) in train6:
                continue
            cands.append((k, m.group(1), m.group(2)))
        if not cands:
            return None
        k, word, punct = rng.choice(cands)
        lst = ranked[shape(word)]
        r = rank_of[word]
        pool = [w for w in lst[max(0, r - 25):r + 26] if w.lower() != word.lower()]
        distract = rng.sample(pool, 3)
        rest = punct + ("" if k + 1 == len(ws) else " " + " ".join(ws[k + 1:]))
        return mc_item(rng, " ".join(ws[:k]), word + rest, [d + rest for d in distract])

    rng = random.Random(rng_seed)
    test = []
    for v in rng.sample(held, len(held)):
        if v[3] in train_texts:
            continue
        it = cloze(rng, v, True)
        if it:
            test.append(it)
        if len(test) == 1000:
            break
    fewshot = []
    for v in rng.sample(train, 400):
        it = cloze(rng, v, False)
        if it:
            fewshot.append(it)
        if len(fewshot) == 50:
            break
    made.append(write_task(out_dir, {"task": "kjv_cloze", "type": "multiple_choice", "target_delimiter": " ",
                                     "fewshot_delimiter": "\n\n", "chance": 0.25}, fewshot, test))

    # (b) which book: the gold book is balanced over the 11 held-out books with 46 or more verses,
    # and the 3 others are drawn uniformly from the rest of them, so that a guess that does not
    # read the verse scores 1/4 whatever its preferences among the names
    rng = random.Random(rng_seed + 1)
    by_book = defaultdict(list)
    for v in held:
        if v[3] not in train_texts:
            by_book[v[0]].append(v)
    n_per = 46
    books = [b for b in dict.fromkeys(v[0] for v in held) if len(by_book[b]) >= n_per]
    query = "%s\nThis verse is from the book of"
    test = []
    for b in books:
        for v in rng.sample(by_book[b], n_per):
            others = rng.sample([x for x in books if x != b], 3)
            test.append(mc_item(rng, query % v[3], b, others))
    rng.shuffle(test)
    all_books = list(dict.fromkeys(v[0] for v in verses))
    fewshot = []
    for v in rng.sample(train, 50):
        others = rng.sample([x for x in all_books if x != v[0]], 3)
        fewshot.append(mc_item(rng, query % v[3], v[0], others))
    made.append(write_task(out_dir, {"task": "kjv_book", "type": "multiple_choice", "target_delimiter": " ",
                                     "fewshot_delimiter": "\n\n", "chance": 0.25}, fewshot, test))

    # (c) which verse comes next: the next verse of the same chapter among 3 other verses of the
    # same part (held-out or training) of the text; one verse a line, as in the corpus
    rng = random.Random(rng_seed + 2)

    def next_items(part, n, need_unseen):
        idx = [i for i in range(len(part) - 1) if part[i][:2] == part[i + 1][:2]
               and (not need_unseen or (part[i][3] not in train_texts and part[i + 1][3] not in train_texts))]
        items = []
        for i in rng.sample(idx, min(n, len(idx))):
            gold = part[i + 1][3]
            others = []
            while len(others) < 3:
                d = part[rng.randrange(len(part))][3]
                if d not in (gold, part[i][3]) and d not in others:
                    others.append(d)
            items.append(mc_item(rng, part[i][3], gold, others))
        return items

    test = next_items(held, 1000, True)
    fewshot = next_items(train, 50, False)
    made.append(write_task(out_dir, {"task": "kjv_next", "type": "multiple_choice", "target_delimiter": "\n",
                                     "fewshot_delimiter": "\n\n", "chance": 0.25}, fewshot, test))

    # held-out chapters as documents: bits per byte
    test = [{"text": "\n".join(ts)} for b, c, ts in kjv_chapters(held)]
    made.append(write_task(out_dir, {"task": "kjv_heldout", "type": "perplexity"}, [], test))
    return made


def wn_tasks(out_dir, rng_seed=31):
    wn = wordnet()
    made = []
    syn = list(wn.values())
    all_lemmas = defaultdict(list)  # lower-case lemma -> synsets holding it
    for s in syn:
        for l in s.lemmas:
            all_lemmas[l.lower()].append(s)

    def gives_away(lemmas, text):
        """Whether a word (3 letters or more) of one of the lemmas is a word of text."""
        t = set(words_of(text))
        return any(w in t for l in lemmas for w in words_of(l) if len(w) >= 3)

    def define_items(rng, pool, n):
        """(d) the lemmas of a synset as the corpus writes them, then its definition among 3
        definitions of other synsets of the same part of speech drawn from the same pool."""
        by_pos = defaultdict(list)
        for s in pool:
            by_pos[POS_NAME[s.pos]].append(s)
        items = []
        # a definition that repeats the word ("clank: make a clank") would reward copying
        golds = [s for s in pool if not gives_away(s.lemmas, s.definition)]
        for s in rng.sample(golds, min(n, len(golds))):
            lem = set(l.lower() for l in s.lemmas)
            others = []
            cands = by_pos[POS_NAME[s.pos]]
            while len(others) < 3:
                d = cands[rng.randrange(len(cands))]
                if d is s or lem & set(l.lower() for l in d.lemmas) or d.definition == s.definition \
                        or d.definition in others or not d.definition:
                    continue
                others.append(d.definition)
            items.append(mc_item(rng, "%s (%s):" % (", ".join(s.lemmas), POS_NAME[s.pos]), s.definition, others))
        return items

    rng = random.Random(rng_seed)
    train_defs = set(s.definition for s in syn if not s.held)
    test_pool = [s for s in syn if s.held and s.familiar and len(s.definition) >= 10 and s.definition not in train_defs]
    few_pool = [s for s in syn if not s.held and s.familiar and len(s.definition) >= 10]
    test = define_items(rng, test_pool, 1000)
    fewshot = define_items(rng, few_pool, 50)
    made.append(write_task(out_dir, {"task": "wn_define", "type": "multiple_choice", "target_delimiter": " ",
                                     "fewshot_delimiter": "\n\n", "chance": 0.25}, fewshot, test))

    # (e) a definition, then the word: generated, any of the synset's lemmas accepted
    def word_items(rng, pool, n):
        ok = [s for s in pool if not gives_away(s.lemmas, s.definition)]
        return [{"query": "Definition: %s\nWord:" % s.definition, "answers": list(dict.fromkeys(s.lemmas))}
                for s in rng.sample(ok, min(n, len(ok)))]

    rng = random.Random(rng_seed + 1)
    test = word_items(rng, test_pool, 500)
    fewshot = word_items(rng, few_pool, 50)
    made.append(write_task(out_dir, {"task": "wn_word", "type": "generate", "target_delimiter": " ",
                                     "fewshot_delimiter": "\n\n", "until": ["\n"], "chance": 0.0},
                           fewshot, test))

    # (f) hypernyms: "X is a kind of" and the first lemma of X's hypernym among 3 hypernyms of
    # other synsets of the pool, none an ancestor of any sense of X
    def ancestors(s, seen=None):
        seen = set() if seen is None else seen
        for sym, key, _ in s.ptrs:
            if sym in ("@", "@i") and key not in seen:
                seen.add(key)
                ancestors(wn[key], seen)
        return seen

    def name(s):
        fam = [l for l in s.lemmas if (l.lower(), FILE_LETTER[s.pos]) in fam_lemmas]
        return (fam or s.lemmas)[0]

    fam_lemmas = set()  # (lower-case lemma, a/n/v/r) of familiar synsets
    for s in syn:
        if s.familiar:
            for l in s.lemmas:
                fam_lemmas.add((l.lower(), FILE_LETTER[s.pos]))

    def hyper_items(rng, pool, n):
        pool = [s for s in pool if s.pos == "n" and any(p[0] == "@" for p in s.ptrs)]
        hyper_names = sorted(set(name(wn[p[1]]) for s in pool for p in s.ptrs if p[0] == "@"))
        # the hypernym must not repeat the word ("state government is a kind of government")
        pool = [s for s in pool if not gives_away([name(s)], name(wn[next(p[1] for p in s.ptrs if p[0] == "@")]))]
        items = []
        for s in rng.sample(pool, min(n, len(pool))):
            word = name(s)
            gold = name(wn[next(p[1] for p in s.ptrs if p[0] == "@")])
            excluded = set()
            for t in all_lemmas[word.lower()]:
                excluded |= set(name(wn[k]).lower() for k in ancestors(t))
                excluded |= set(l.lower() for l in t.lemmas)
            others = []
            while len(others) < 3:
                d = hyper_names[rng.randrange(len(hyper_names))]
                if d.lower() in excluded or d == gold or d in others:
                    continue
                others.append(d)
            items.append(mc_item(rng, "%s is a kind of" % word, gold, others))
        return items

    rng = random.Random(rng_seed + 2)
    test = hyper_items(rng, test_pool, 1000)
    fewshot = hyper_items(rng, few_pool, 50)
    made.append(write_task(out_dir, {"task": "wn_hypernym", "type": "multiple_choice", "target_delimiter": " ",
                                     "fewshot_delimiter": "\n\n", "chance": 0.25}, fewshot, test))

    # (f') antonyms: "The opposite of X is" and X's antonym among 3 antonyms of other items; a pair
    # is a test item when either of its synsets is held out. Pairs of one stem (un-, in-, dis-,
    # over-/under-...: one word inside the other, or the same first 4 letters with or without a
    # prefix) are left out: the stem alone would give them away
    antonyms_of = defaultdict(set)  # lower-case lemma -> lower-case antonyms, over all senses
    pairs = []
    for s in syn:
        for sym, key, st in s.ptrs:
            if sym == "!":
                src, tgt = int(st[:2], 16), int(st[2:], 16)
                w, a = s.lemmas[src - 1], wn[key].lemmas[tgt - 1]
                antonyms_of[w.lower()].add(a.lower())
                pairs.append((s, wn[key], w, a))

    prefixes = ("under", "over", "super", "hyper", "hypo", "anti", "post", "down", "dis", "non", "mis", "pre",
                "out", "sub", "un", "in", "im", "il", "ir", "de", "up", "ex")

    def stem(w):
        for p in prefixes:
            if w.startswith(p) and len(w) - len(p) >= 3:
                return w[len(p):]
        return w

    def one_stem(w, a):
        w, a = w.lower(), a.lower()
        return w in a or a in w or w[:4] == a[:4] or stem(w)[:4] == stem(a)[:4]

    def antonym_items(rng, want_held, n):
        seen, uniq = set(), []
        for s, t, w, a in pairs:
            if (s.held or t.held) == want_held and (w.lower(), FILE_LETTER[s.pos]) in fam_lemmas \
                    and not one_stem(w, a) and w.lower() not in seen:
                seen.add(w.lower())
                uniq.append((s, w, a))
        by_pos = defaultdict(set)
        for s, w, a in uniq:
            by_pos[POS_NAME[s.pos]].add(a)
        items = []
        for s, w, a in rng.sample(uniq, min(n, len(uniq))):
            cands = sorted(by_pos[POS_NAME[s.pos]])
            others = []
            while len(others) < 3:
                d = cands[rng.randrange(len(cands))]
                if d.lower() in antonyms_of[w.lower()] or one_stem(d, w) or d == a or d in others:
                    continue
                others.append(d)
            items.append(mc_item(rng, "The opposite of %s is" % w, a, others))
        return items

    rng = random.Random(rng_seed + 3)
    test = antonym_items(rng, True, 1000)
    fewshot = antonym_items(rng, False, 50)
    made.append(write_task(out_dir, {"task": "wn_antonym", "type": "multiple_choice", "target_delimiter": " ",
                                     "fewshot_delimiter": "\n\n", "chance": 0.25}, fewshot, test))
    return made


def tasks(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    made = kjv_tasks(out_dir) + wn_tasks(out_dir)
    sys.stdout.write("task\ttype\tchance\tfewshot\ttest\n")
    for t in made:
        sys.stdout.write("%s\t%s\t%s\t%d\t%d\n" % (t[0], t[1], "-" if t[2] is None else t[2], t[3], t[4]))


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("corpus", "tasks"):
        sys.stderr.write("usage: textdata.py corpus|tasks OUT_DIR\n")
        sys.exit(2)
    (corpus if sys.argv[1] == "corpus" else tasks)(sys.argv[2])


if __name__ == "__main__":
    main()
