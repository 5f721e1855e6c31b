#!/usr/bin/env python3
"""Builds an EN->DE parallel corpus from the Ding German-English dictionary.

Source: Debian's `trans-de-en` package (Ding, (c) Frank Richter, GPL-2+), file
/usr/share/trans/de-en. Each line is `German :: English`; each side is split by ` | `
into aligned sub-entries (same count on both sides); a sub-entry lists alternatives
separated by `;`.

Usage: scripts/prepare_ding.sh [--input FILE] [--out DIR] [--valid N] [--test N] [--seed S]
       [--cache DIR] [--force]

Output (default: data/ding/ in the repository): {train,valid,test}.{en,de}, one sentence
per line, UTF-8, equal line counts per pair, .en is the source. <out>/.stamp records the
input checksum, this script's checksum and the options; a rerun that finds the same stamp
and all six files says "up to date" and exits at once (--force rebuilds). Files are
written to temporaries and renamed, the stamp last.

Input, in this order: --input FILE (plain or gzipped); /usr/share/trans/de-en when the
package is installed; <cache>/usr/share/trans/de-en (cache: --cache, default <out>/.deb);
otherwise `apt-get download trans-de-en` + `dpkg -x` into the cache (no root needed, but
apt's package lists must exist: `apt-get update`).

Rules, applied per aligned sub-entry pair (German, English):
 1. Lines starting with `#` and blank lines are skipped. A line without exactly one ` :: `,
    with a different number of ` | ` sub-entries on the two sides, or that is not UTF-8,
    is skipped and counted.
 2. Annotations are deleted, before alternatives are split (they may contain `;`):
    /ABBR/ (a slash-delimited token preceded by a space or the start, e.g. /NBCRV/,
    /z. B./), then {...} (gender, part of speech, verb forms), [...] (region, register,
    field), <...> (spelling variants, and `<>`, the particle-position mark) and (...)
    (glosses, optional words, in-word optional letters as in `behavio(u)r` -> `behavior`),
    innermost first, so nested brackets go too. A region label between a word and a
    slash goes first (`colour [Br.]/color [Am.] fastness` -> `colour/color fastness`)
    when the word after the slash is followed by another annotation, `;` or the end.
    C1 control characters (cp1252 debris) become their cp1252 characters.
 3. Each side is split on `;` into alternatives; dictionary object placeholders (sth., sb.,
    etw., jdm., jdn., jds., ...) are removed (`to file away sth.` -> `to file away`);
    whitespace is collapsed (all Unicode spaces, NFC), a space before , . ! ? left by a
    deletion is removed.
 4. Unspaced word alternatives `a/b[/c]` inside a token are resolved to the first one
    (`sheer/pure coincidence` -> `sheer coincidence`, `sb./sth.` -> `sb.`) when every
    part has a letter and >= 2 characters (or is `I` or `a`: `I/he/she` -> `I`), the parts
    are not all upper case (TCP/IP, AC/DC stay) and no part has a hyphen (`Ein-/Ausgabe`,
    `Eingabe/Ausgabe-Buchse` stay). An alternative made only of single words separated
    by ` / ` becomes its first word (`struck / stricken` -> `struck`). Leading/trailing
    commas are dropped.
 5. An alternative is unusable when it still contains a slash next to a space or at
    either end (` / ` alternatives whose scope is unknown, as in `the end of the
    sentence / last in the sentence`; `shops /stores`; an unclosed `/NEET`), a bracket
    of any kind, `|`, `::`, or no letter at all.
 6. Pairing: if both sides have the same number of alternatives they are paired by
    position (pairs with an unusable member are dropped); otherwise the first usable
    alternative of each side forms the one pair.
 7. A pair whose German side reads as English and English side as German (function-word
    counts) is swapped back (the dictionary has a few reversed example sentences).
 8. Exact duplicate (en, de) pairs are dropped (first occurrence kept, file order).

Held-out sets: valid and test contain full sentences only: both sides start with an
upper-case letter, end with . ! or ?, have >= 4 words, and, to keep them clean, contain
no slash, no ellipsis and no dictionary placeholders (sth., sb., etw., jdm., ...).
Candidates are ranked by sha256(seed, normalised English) (normalised = lower case,
letters and digits only); the first --valid go to valid, the next --test to test,
skipping any whose normalised English or German is already held out. Every pair whose
normalised English or German equals a held-out one is removed from train (so no
valid/test source sentence appears in train, and none appears in both valid and test).
Train keeps dictionary (file) order; valid/test are in hash order.

The demo's training mix, mix.{en,de} (configs/demo.yaml trains on it): train re-weighted
towards what the test asks for. Every full-sentence pair of train (both sides pass the
held-out sets' sentence rule: capitalised, ending in . ! or ?, >= 4 words) --mix-sentences
times (default 10), every other pair whose English side has >= 3 words once, and every
--mix-short-every-th (default 10) of the remaining one- and two-word dictionary entries, in
that order (the batcher shuffles). It is made from train only, so nothing held out reaches it.
The defaults were chosen by validation BLEU (docs/DEMO.md).
"""

import argparse
import glob
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata

STAMP_VERSION = "prepare_ding 2"
SYSTEM_FILE = "/usr/share/trans/de-en"
REL_FILE = os.path.join("usr", "share", "trans", "de-en")
UMASK = os.umask(0o022)
os.umask(UMASK)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "data", "ding")

ABBR_RE = re.compile(r"(?<!\S)/(?=\S).*?(?<=\S)/(?=[\s;,.!?)]|$)")
# `colour [Br.]/color [Am.]`: an annotation between a word and a slash is dropped first,
# when the word after the slash is itself followed by an annotation, `;` or the end.
REGION_SLASH_RE = re.compile(r"(?<=\S)(?: \[[^\[\]]*\])+/(?=\S+(?: [\[{(]|;|$))")
SPACED_WORD_ALTS_RE = re.compile(r"([^\s/]+)(?: / [^\s/]+)+")
BRACKET_RES = [re.compile(p)
               for p in (r"\{[^{}]*\}", r"\[[^\[\]]*\]", r"<[^<>]*>", r"\([^()]*\)")]
SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+([,.!?])(?=\s|$|[\"“”’'])")
LETTER_RE = re.compile(r"[^\W\d_]")
LEFTOVER_RE = re.compile(r"[{}\[\]<>()|]|::|(?<!\S)/|/(?!\S)")
TRAIL_PUNCT = ".,!?:\"“”„’‘'…"
PLACEHOLDER_RE = re.compile(
    r"(?<!\w)(sth|sb|etw|jdm|jdn|jds|jd|jmd|jmdm|jmdn|s\.th)\.(?!\w)", re.IGNORECASE)
SENT_END = (".", "!", "?")
C1_RE = re.compile("[\x80-\x9f]")
WORD_RE = re.compile(r"[\w’']+")
NON_ALNUM_RE = re.compile(r"[\W_]+")
ANNOT_CHARS_RE = re.compile(r"[{}\[\]<>()/]")

EN_WORDS = set("""the a is are were of to and that it you he she we they i not for on with be
have has this what do does did my your his their our will would can could at by from there
been should must these those which who how why its it’s don’t doesn’t didn’t isn’t i’m""".split())
DE_WORDS = set("""der das und ist nicht ein eine einen einem einer dem den des zu sich mit auf
für ich du er sie wir es von im auch sind noch nur dass wie aber kann mir mich uns ihm ihn
ihnen wurde werden hatte habe wenn bei nach über dieser diese dieses kein keine schon sehr
sein seine""".split())


def c1_fix(s):
    if not C1_RE.search(s):
        return s
    out = []
    for ch in s:
        if "\x80" <= ch <= "\x9f":
            try:
                ch = bytes([ord(ch)]).decode("cp1252")
            except UnicodeDecodeError:
                ch = " "
        out.append(ch)
    return "".join(out)


def strip_annotations(s):
    if not ANNOT_CHARS_RE.search(s):
        return s
    s = ABBR_RE.sub(" ", s)
    if "]/" in s:
        s = REGION_SLASH_RE.sub("/", s)
    changed = True
    while changed:
        changed = False
        for rx in BRACKET_RES:
            s2 = rx.sub("", s)
            if s2 != s:
                s, changed = s2, True
    return s


def resolve_slash_token(tok):
    if "/" not in tok or tok.startswith("/") or tok.endswith("/"):
        return tok
    core = tok.rstrip(TRAIL_PUNCT)
    trail = tok[len(core):]
    parts = core.split("/")
    if any((len(p) < 2 and p not in ("I", "a", "A")) or not LETTER_RE.search(p) for p in parts):
        return tok
    if any("-" in p for p in parts):
        return tok
    if all(p.upper() == p for p in parts):
        return tok
    first = parts[0]
    if first.endswith(".") and trail.startswith("."):
        trail = trail[1:]
    return first + trail


def clean_alt(s):
    if not s.isascii():
        s = unicodedata.normalize("NFC", s)
    # Object placeholders (sth., sb., etw., jdm., ...) mark valency in a dictionary; in a
    # translation corpus they are the most frequent "word" by far and a small model learns to
    # repeat them. Dropped everywhere (held-out sentences never contain them).
    if PLACEHOLDER_RE.search(s):
        s = PLACEHOLDER_RE.sub(" ", s).replace(" 's", " ").replace("'s ", " ")
    s = " ".join(s.split())
    if " ," in s or " ." in s or " !" in s or " ?" in s:
        s = SPACE_BEFORE_PUNCT_RE.sub(r"\1", s)
    s = s.strip(" ,")
    if "/" in s:
        m = SPACED_WORD_ALTS_RE.fullmatch(s)
        if m:
            s = m.group(1)
        s = " ".join(resolve_slash_token(t) for t in s.split(" "))
    return s


def usable(s):
    return bool(s) and LETTER_RE.search(s) is not None and LEFTOVER_RE.search(s) is None


def split_alts(side):
    return [clean_alt(a) for a in strip_annotations(side).split(";")]


def pair_alts(de_alts, en_alts):
    de_alts = [a for a in de_alts if a]
    en_alts = [a for a in en_alts if a]
    if de_alts and len(de_alts) == len(en_alts):
        return [(d, e) for d, e in zip(de_alts, en_alts) if usable(d) and usable(e)]
    d = next((a for a in de_alts if usable(a)), None)
    e = next((a for a in en_alts if usable(a)), None)
    return [(d, e)] if d and e else []


def lang_score(s, words):
    return sum(1 for w in WORD_RE.findall(s.lower()) if w in words)


def looks_swapped(de, en):
    if de.count(" ") < 2 or en.count(" ") < 2:
        return False
    de_en, de_de = lang_score(de, EN_WORDS), lang_score(de, DE_WORDS)
    en_en, en_de = lang_score(en, EN_WORDS), lang_score(en, DE_WORDS)
    return de_en >= 2 and de_en > de_de and en_de >= 2 and en_de > en_en


def norm_key(s):
    return NON_ALNUM_RE.sub("", s.lower())


def is_sentence(s):
    return s[:1].isupper() and s.endswith(SENT_END) and len(s.split()) >= 4


def heldout_eligible(en, de):
    for s in (en, de):
        if not is_sentence(s) or "/" in s or "…" in s or "..." in s or PLACEHOLDER_RE.search(s):
            return False
    return norm_key(en) != norm_key(de)


def parse(raw_lines, stats):
    pairs, seen = [], set()
    if raw_lines and raw_lines[-1] == b"":
        raw_lines = raw_lines[:-1]
    for raw in raw_lines:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            stats["lines_bad_utf8"] += 1
            continue
        line = c1_fix(line.rstrip("\r\n"))
        if not line.strip() or line.startswith("#"):
            stats["lines_comment_or_blank"] += 1
            continue
        sides = line.split(" :: ")
        if len(sides) != 2:
            stats["lines_bad_separator"] += 1
            continue
        de_subs, en_subs = sides[0].split(" | "), sides[1].split(" | ")
        if len(de_subs) != len(en_subs):
            stats["lines_unequal_subentries"] += 1
            continue
        stats["lines_used"] += 1
        for d_sub, e_sub in zip(de_subs, en_subs):
            stats["subentries"] += 1
            got = pair_alts(split_alts(d_sub), split_alts(e_sub))
            if not got:
                stats["subentries_without_pair"] += 1
            for de, en in got:
                if looks_swapped(de, en):
                    de, en = en, de
                    stats["pairs_swapped_back"] += 1
                stats["pairs_before_dedup"] += 1
                if (en, de) in seen:
                    stats["pairs_duplicate"] += 1
                    continue
                seen.add((en, de))
                pairs.append((en, de))
    return pairs


def split_sets(pairs, n_valid, n_test, seed, stats):
    cands, seen_en = [], set()
    for en, de in pairs:
        if not (is_sentence(en) and is_sentence(de)):
            continue
        stats["pairs_full_sentence"] += 1
        if heldout_eligible(en, de):
            k = norm_key(en)
            if k not in seen_en:
                seen_en.add(k)
                h = hashlib.sha256(f"{seed}\x00{k}".encode("utf-8")).hexdigest()
                cands.append((h, en, de))
    stats["heldout_candidates"] = len(cands)
    cands.sort()
    held_en, held_de = set(), set()
    valid, test = [], []
    for _, en, de in cands:
        if len(valid) >= n_valid and len(test) >= n_test:
            break
        ke, kd = norm_key(en), norm_key(de)
        if ke in held_en or kd in held_de:
            continue
        held_en.add(ke)
        held_de.add(kd)
        (valid if len(valid) < n_valid else test).append((en, de))
    if len(valid) < n_valid or len(test) < n_test:
        raise SystemExit(f"prepare_ding: only {len(valid) + len(test)} distinct held-out "
                         f"sentences, cannot fill valid={n_valid} test={n_test}")
    held = set(valid) | set(test)
    train = []
    for en, de in pairs:
        if (en, de) in held:
            continue
        if norm_key(en) in held_en or norm_key(de) in held_de:
            stats["train_removed_overlap"] += 1
            continue
        train.append((en, de))
    return train, valid, test


def demo_mix(train, sentence_copies, short_every, stats):
    sentences, longer, short = [], [], []
    for en, de in train:
        if is_sentence(en) and is_sentence(de):
            sentences.append((en, de))
        elif len(en.split()) >= 3:
            longer.append((en, de))
        else:
            short.append((en, de))
    stats["mix_sentence_pairs"] = len(sentences)
    stats["mix_longer_pairs"] = len(longer)
    stats["mix_short_pairs_kept"] = len(short[::short_every]) if short_every > 0 else 0
    return sentences * sentence_copies + longer + (short[::short_every] if short_every > 0 else [])


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_lines(path):
    with open(path, "rb") as f:
        magic = f.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        return f.read().split(b"\n")


def find_in(root):
    for cand in (os.path.join(root, REL_FILE), os.path.join(root, REL_FILE) + ".gz"):
        if os.path.isfile(cand):
            return cand
    return None


def locate_input(args):
    if args.input:
        if not os.path.isfile(args.input):
            raise SystemExit(f"prepare_ding: --input {args.input}: no such file")
        return args.input
    for cand in (SYSTEM_FILE, SYSTEM_FILE + ".gz"):
        if os.path.isfile(cand):
            return cand
    cache = args.cache or os.path.join(args.out, ".deb")
    found = find_in(cache)
    if found:
        return found
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise SystemExit("prepare_ding: no apt-get/dpkg here; download trans-de-en "
                         "yourself and pass the de-en file with --input")
    os.makedirs(cache, exist_ok=True)
    print(f"prepare_ding: downloading trans-de-en into {cache}", flush=True)
    r = subprocess.run(["apt-get", "download", "trans-de-en"], cwd=cache)
    debs = sorted(glob.glob(os.path.join(cache, "trans-de-en_*.deb")))
    if r.returncode != 0 or not debs:
        raise SystemExit("prepare_ding: `apt-get download trans-de-en` failed (run "
                         "`apt-get update` first, or pass the de-en file with --input)")
    subprocess.run(["dpkg", "-x", debs[-1], cache], check=True)
    found = find_in(cache)
    if not found:
        raise SystemExit(f"prepare_ding: {debs[-1]} has no {REL_FILE}")
    return found


def write_atomic(path, lines):
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    os.chmod(tmp, 0o666 & ~UMASK)
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
        for s in lines:
            f.write(s + "\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", help="Ding de-en file (plain or .gz); default: see header")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory (default: data/ding "
                    "in the repository)")
    ap.add_argument("--cache", help="where the .deb is downloaded (default <out>/.deb)")
    ap.add_argument("--valid", type=int, default=1000, help="valid pairs (default 1000)")
    ap.add_argument("--test", type=int, default=2000, help="test pairs (default 2000)")
    ap.add_argument("--seed", type=int, default=1234, help="split seed (default 1234)")
    ap.add_argument("--mix-sentences", type=int, default=10,
                    help="copies of each full-sentence pair in mix.* (default 10)")
    ap.add_argument("--mix-short-every", type=int, default=10,
                    help="keep every N-th one- or two-word entry in mix.* (default 10; 0: none)")
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = ap.parse_args()
    if args.valid < 0 or args.test < 0:
        raise SystemExit("prepare_ding: --valid and --test must be >= 0")
    if args.mix_sentences < 0 or args.mix_short_every < 0:
        raise SystemExit("prepare_ding: --mix-sentences and --mix-short-every must be >= 0")

    t0 = time.time()
    src = locate_input(args)
    with open(os.path.abspath(__file__), "rb") as f:
        script_sum = hashlib.sha256(f.read()).hexdigest()
    key = (f"{STAMP_VERSION}\ninput_sha256 {sha256_file(src)}\nscript_sha256 {script_sum}\n"
           f"valid {args.valid}\ntest {args.test}\nseed {args.seed}\n"
           f"mix_sentences {args.mix_sentences}\nmix_short_every {args.mix_short_every}\n")
    names = [f"{s}.{l}" for s in ("train", "valid", "test", "mix") for l in ("en", "de")]
    outs = [os.path.join(args.out, n) for n in names]
    stamp = os.path.join(args.out, ".stamp")
    if not args.force and os.path.isfile(stamp) and all(os.path.isfile(p) for p in outs):
        with open(stamp, encoding="utf-8") as f:
            old = f.read()
        if old.startswith(key):
            print(f"prepare_ding: {args.out} is up to date (input {src}); --force rebuilds")
            print(old[len(key):], end="")
            return 0

    os.makedirs(args.out, exist_ok=True)
    if os.path.exists(stamp):
        os.remove(stamp)
    stats = {k: 0 for k in ("lines_comment_or_blank", "lines_bad_utf8", "lines_bad_separator",
                            "lines_unequal_subentries", "lines_used", "subentries",
                            "subentries_without_pair", "pairs_swapped_back",
                            "pairs_before_dedup", "pairs_duplicate", "pairs_full_sentence",
                            "pairs_unique", "heldout_candidates",
                            "train_removed_overlap", "mix_sentence_pairs", "mix_longer_pairs",
                            "mix_short_pairs_kept")}
    pairs = parse(read_lines(src), stats)
    stats["pairs_unique"] = len(pairs)
    train, valid, test = split_sets(pairs, args.valid, args.test, args.seed, stats)
    mix = demo_mix(train, args.mix_sentences, args.mix_short_every, stats)
    for name, rows in (("train", train), ("valid", valid), ("test", test), ("mix", mix)):
        write_atomic(os.path.join(args.out, name + ".en"), [en for en, _ in rows])
        write_atomic(os.path.join(args.out, name + ".de"), [de for _, de in rows])
        stats[name] = len(rows)
    report = "".join(f"{k} {v}\n" for k, v in stats.items())
    write_atomic(stamp, (key + report).rstrip("\n").split("\n"))
    print(f"prepare_ding: input {src}")
    print(report, end="")
    print(f"prepare_ding: wrote {args.out}/{{train,valid,test,mix}}.{{en,de}} "
          f"in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
