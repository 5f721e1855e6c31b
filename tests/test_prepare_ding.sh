#!/usr/bin/env bash
# Tests scripts/prepare_ding.sh on tests/data/ding_sample.txt (288 lines copied from Ding
# plus 5 synthetic malformed ones): counts, cleaning of annotated entries, held-out sets
# disjoint from train, determinism, the up-to-date stamp and gzipped input.
# Needs bash, python3, coreutils, grep, gzip. Exits non-zero with a message on failure.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
prep="$root/scripts/prepare_ding.sh"
sample="$root/tests/data/ding_sample.txt"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

fail() { echo "test_prepare_ding: FAIL: $*" >&2; exit 1; }

# expect_stat LOG NAME VALUE: the run's printed counter NAME must equal VALUE.
expect_stat() {
  local got
  got="$(awk -v k="$2" '$1 == k { print $2 }' "$1")"
  [ "$got" = "$3" ] || fail "$2 is '${got}', expected $3 (log: $1)"
}

# expect_lines DIR SET N: DIR/SET.en and DIR/SET.de both have N lines.
expect_lines() {
  local en de
  en="$(wc -l < "$1/$2.en")"
  de="$(wc -l < "$1/$2.de")"
  if [ "$en" -ne "$3" ] || [ "$de" -ne "$3" ]; then
    fail "$1/$2: $en/$de lines, expected $3"
  fi
}

# expect_pair DIR SET EN DE: the exact pair EN<TAB>DE is a line of DIR/SET.
expect_pair() {
  paste "$1/$2.en" "$1/$2.de" > "$tmp/pairs.tsv"   # no pipe: grep -q + pipefail races
  grep -Fxq -- "$3	$4" "$tmp/pairs.tsv" || fail "$2 lacks the pair '$3' <-> '$4'"
}

# expect_same DIR1 DIR2: the six output files are byte-identical.
expect_same() {
  local f
  for f in train.en train.de valid.en valid.de test.en test.de mix.en mix.de; do
    cmp -s "$1/$f" "$2/$f" || fail "$1/$f and $2/$f differ"
  done
}

# ---- main run: --valid 5 --test 10 ---------------------------------------------------
bash "$prep" --input "$sample" --out "$tmp/a" --valid 5 --test 10 > "$tmp/a.log" \
  || fail "prepare_ding failed: $(cat "$tmp/a.log")"
log="$tmp/a.log"
# 5 lines of our header + Ding's 5-line header + 1 comment + 2 blank lines at the end.
expect_stat "$log" lines_comment_or_blank 13
# 'no separator on this line' and 'zwei :: two :: drei'.
expect_stat "$log" lines_bad_separator 2
# 'eins | zwei :: one'.
expect_stat "$log" lines_unequal_subentries 1
# The 277 dictionary lines copied from Ding.
expect_stat "$log" lines_used 277
expect_stat "$log" lines_bad_utf8 0
# Blutspur | Blutspuren | (längere) Blutspur :: trail of blood | trails of blood | trail of
# blood.
expect_stat "$log" pairs_duplicate 1
# 'In the current situation many investors are holding back.' sits on the German side.
expect_stat "$log" pairs_swapped_back 1
expect_stat "$log" pairs_unique 755
expect_stat "$log" train_removed_overlap 0
expect_stat "$log" train 740
expect_stat "$log" valid 5
expect_stat "$log" test 10
expect_lines "$tmp/a" train 740
expect_lines "$tmp/a" valid 5
expect_lines "$tmp/a" test 10
# The demo's mix: the 123 full-sentence pairs of train 10 times, the 220 other pairs of >= 3
# English words once, every 10th of the 397 shorter entries (40); all of them train pairs.
expect_stat "$log" mix_sentence_pairs 123
expect_stat "$log" mix_longer_pairs 220
expect_stat "$log" mix_short_pairs_kept 40
expect_stat "$log" mix 1490
expect_lines "$tmp/a" mix 1490
paste "$tmp/a/train.en" "$tmp/a/train.de" | sort -u > "$tmp/train.tsv"
paste "$tmp/a/mix.en" "$tmp/a/mix.de" | sort -u > "$tmp/mix.tsv"
[ "$(comm -23 "$tmp/mix.tsv" "$tmp/train.tsv" | wc -l)" -eq 0 ] || fail "mix has pairs not in train"
[ "$(wc -l < "$tmp/mix.tsv")" -eq $((123 + 220 + 40)) ] || fail "mix: wrong number of distinct pairs"
bash "$prep" --input "$sample" --out "$tmp/m" --valid 5 --test 10 --mix-sentences 2 \
  --mix-short-every 0 > "$tmp/m.log" || fail "prepare_ding --mix-sentences 2 failed"
expect_stat "$tmp/m.log" mix $((2 * 123 + 220))
cmp -s "$tmp/a/train.en" "$tmp/m/train.en" || fail "the mix options changed train"

# Annotated entries become clean pairs. [ugs.], [coll.]:
expect_pair "$tmp/a" train "the nuts and bolts" "das A und O"
# {pl}, second sub-entry:
expect_pair "$tmp/a" train "eel stocks" "Aalbestände"
# <>, (to sb.), (an jdn.), 2 German alternatives vs 1 English: the first of each.
expect_pair "$tmp/a" train "to farm out work" "Arbeit abgeben"
# /NBCRV/:
expect_pair "$tmp/a" train "NBC reconnaissance vehicle" "ABC-Spürpanzer"
# colour [Br.]/color [Am.]:
expect_pair "$tmp/a" train "colour fastness to light" "Farbbeständigkeit gegen Licht"
# 2 vs 2 alternatives, paired by position:
expect_pair "$tmp/a" train "to file away" "ad acta legen"
# (or what), (oder was), verschaukeln/veralbern:
expect_pair "$tmp/a" train "Are you pulling my leg?" "Willst du mich verschaukeln?"
# I/he/she:
expect_pair "$tmp/a" train "I strove" "ich bemühte mich"
# struck / stricken [Am.]:
expect_pair "$tmp/a" train "struck" "zugeschlagen"
# 2 German alternatives (sentences) vs 1 English:
expect_pair "$tmp/a" train "That takes the cake!" "Das ist die Höhe!"
# cp1252 \x92 in d\x92art repaired to ’:
expect_pair "$tmp/a" train "Centre Georges Pompidou" \
  "Centre national d’art et de culture Georges-Pompidou"
# An example sentence given the wrong way round in Ding, swapped back:
expect_pair "$tmp/a" train "In the current situation many investors are holding back." \
  "In der aktuellen Situation halten sich viele Anleger zurück."

# No annotation debris, no empty lines, valid UTF-8; held-out sets are full sentences.
python3 - "$tmp/a" <<'EOF' || fail "output content check failed"
import re, sys
d = sys.argv[1]
bad = re.compile(r"[{}\[\]<>()|;]|::| / |^\s|\s$|^$")
full = re.compile(r"^[^\W\d_]")
for s in ("train", "valid", "test"):
    for l in ("en", "de"):
        with open(f"{d}/{s}.{l}", "rb") as f:
            lines = f.read().decode("utf-8").split("\n")
        assert lines[-1] == "", f"{s}.{l}: no final newline"
        for i, t in enumerate(lines[:-1], 1):
            assert not bad.search(t), f"{s}.{l}:{i}: unclean line {t!r}"
            if s != "train":
                ok = t[:1].isupper() and t[-1] in ".!?" and len(t.split()) >= 4
                assert ok, f"{s}.{l}:{i}: not a full sentence: {t!r}"
EOF

# Held out: no valid/test source (or target) sentence in train, valid and test disjoint.
for l in en de; do
  for s in valid test; do
    if grep -Fxf "$tmp/a/$s.$l" "$tmp/a/train.$l" > "$tmp/overlap"; then
      fail "$s.$l lines also in train.$l: $(head -3 "$tmp/overlap")"
    fi
  done
  if grep -Fxf "$tmp/a/valid.$l" "$tmp/a/test.$l" > "$tmp/overlap"; then
    fail "valid.$l lines also in test.$l: $(head -3 "$tmp/overlap")"
  fi
done

# ---- determinism and idempotence -------------------------------------------------------
bash "$prep" --input "$sample" --out "$tmp/b" --valid 5 --test 10 > "$tmp/b.log" \
  || fail "second run failed"
expect_same "$tmp/a" "$tmp/b"
bash "$prep" --input "$sample" --out "$tmp/a" --valid 5 --test 10 > "$tmp/a2.log" \
  || fail "rerun failed"
grep -q "up to date" "$tmp/a2.log" || fail "rerun did not report 'up to date'"
expect_same "$tmp/a" "$tmp/b"
bash "$prep" --input "$sample" --out "$tmp/a" --valid 5 --test 10 --force > "$tmp/a3.log" \
  || fail "--force run failed"
grep -q "up to date" "$tmp/a3.log" && fail "--force did not rebuild"
expect_same "$tmp/a" "$tmp/b"
# Changed options invalidate the stamp.
bash "$prep" --input "$sample" --out "$tmp/a" --valid 6 --test 10 > "$tmp/a4.log" \
  || fail "--valid 6 run failed"
grep -q "up to date" "$tmp/a4.log" && fail "changed --valid was reported up to date"
expect_lines "$tmp/a" valid 6
# Gzipped input gives the same files.
gzip -c "$sample" > "$tmp/sample.gz"
bash "$prep" --input "$tmp/sample.gz" --out "$tmp/c" --valid 5 --test 10 > "$tmp/c.log" \
  || fail "gzipped input failed"
expect_same "$tmp/b" "$tmp/c"
# Another seed picks other held-out sentences.
bash "$prep" --input "$sample" --out "$tmp/d" --valid 5 --test 10 --seed 7 > "$tmp/d.log" \
  || fail "--seed 7 failed"
cmp -s "$tmp/b/valid.en" "$tmp/d/valid.en" && fail "--seed 7 gave the same valid set"

# ---- every eligible sentence held out: train loses the other translations ---------------
# 136 distinct candidates; 'Are there any further questions?' and 'It isn’t my job.' each
# have a second German translation, which must leave train.
bash "$prep" --input "$sample" --out "$tmp/e" --valid 0 --test 136 > "$tmp/e.log" \
  || fail "--test 136 failed: $(cat "$tmp/e.log")"
expect_stat "$tmp/e.log" train_removed_overlap 2
expect_stat "$tmp/e.log" train 617
expect_lines "$tmp/e" test 136
expect_lines "$tmp/e" valid 0
q="Are there any further questions?"
grep -Fxq "$q" "$tmp/e/test.en" || fail "'$q' not held out"
grep -Fxq "$q" "$tmp/e/train.en" && fail "'$q' left in train"
bash "$prep" --input "$sample" --out "$tmp/g" --valid 5 --test 0 > "$tmp/g.log" \
  || fail "--test 0 failed: $(cat "$tmp/g.log")"
expect_lines "$tmp/g" valid 5
expect_lines "$tmp/g" test 0
expect_lines "$tmp/g" train 750
if bash "$prep" --input "$sample" --out "$tmp/f" --valid 0 --test 137 > "$tmp/f.log" 2>&1
then
  fail "--test 137 (more than the sample has) did not fail"
fi
if bash "$prep" --input "$tmp/missing" --out "$tmp/f" > "$tmp/f.log" 2>&1; then
  fail "a missing --input did not fail"
fi

echo "test_prepare_ding: OK"
