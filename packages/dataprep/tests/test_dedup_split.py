"""Exact keys, MinHash near-duplicate detection against true Jaccard, and the id-hash split."""

from __future__ import annotations

import random

import numpy as np
from datasketch import MinHash
from mft_dataprep.dedup import NearDeduper, exact_key, minhash_values, shingle_hashes
from mft_dataprep.split import SmallestKeys, fraction_threshold, split_key
from mft_dataprep.words import words


def test_exact_key_normalises_whitespace_and_case_only():
    a = exact_key([("user", "Hello   World"), ("assistant", "Hi\nthere")])
    assert a == exact_key([("user", "hello world"), ("assistant", "HI there")])
    assert a != exact_key([("user", "hello world!"), ("assistant", "hi there")])
    assert a != exact_key([("assistant", "hello world"), ("user", "hi there")])


def test_shingles_hand_counted():
    assert len(shingle_hashes(words("a b c d e f"), 5)) == 2
    assert len(shingle_hashes(words("a b"), 5)) == 1
    assert shingle_hashes(words("A B, C D E"), 5) == shingle_hashes(words("a  b c\nd e."), 5)
    assert shingle_hashes([], 5) == []


def _jaccard(a: str, b: str, k: int) -> float:
    sa, sb = set(shingle_hashes(words(a), k)), set(shingle_hashes(words(b), k))
    return len(sa & sb) / len(sa | sb)


def test_near_dedup_flags_high_similarity_only():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]
    base = [rng.choice(vocab) for _ in range(400)]
    near = list(base)
    near[200] = "changed"  # one word: true shingle Jaccard about 0.975
    far = [rng.choice(vocab) for _ in range(400)]
    half = base[:200] + far[:200]
    dd = NearDeduper(0.85, 128, 5)
    dd.add("base", dd.signature([("user", " ".join(base))]))
    assert _jaccard(" ".join(base), " ".join(near), 5) > 0.95
    assert dd.first_similar(dd.signature([("user", " ".join(near))])) == "base"
    assert dd.first_similar(dd.signature([("user", " ".join(far))])) is None
    assert _jaccard(" ".join(base), " ".join(half), 5) < 0.5
    assert dd.first_similar(dd.signature([("user", " ".join(half))])) is None


def test_minhash_values_equal_datasketch_affine32():
    rng = random.Random(3)
    dd = NearDeduper(0.85, 128, 5)
    for n in (0, 1, 4, 5, 37, 400, 9000):  # 9000 words: more than one block of shingles
        tokens = [f"w{rng.randrange(3000)}" for _ in range(n)]
        ref = MinHash(num_perm=128, seed=1, hashfunc=int, scheme="affine32")
        ref.update_batch(shingle_hashes(tokens, 5))
        assert minhash_values(np.array(shingle_hashes(tokens, 5), dtype=np.uint64), ref.permutations).tolist() \
            == ref.hashvalues.tolist()
        assert dd.signature_of_words(tokens).hashvalues.tolist() == ref.hashvalues.tolist()


def test_signatures_are_deterministic():
    a = NearDeduper(0.85, 64, 5).signature([("user", "the same text every time")])
    b = NearDeduper(0.85, 64, 5).signature([("user", "the same text every time")])
    assert (a.hashvalues == b.hashvalues).all()


def test_fraction_split_is_stable_and_about_right():
    keys = [split_key(f"t-{i}", "seed") for i in range(20000)]
    assert keys == [split_key(f"t-{i}", "seed") for i in range(20000)]
    frac = sum(k < fraction_threshold(0.1) for k in keys) / len(keys)
    assert 0.09 < frac < 0.11
    assert split_key("t-1", "other") != split_key("t-1", "seed")


def test_smallest_keys_is_order_independent():
    keys = [split_key(f"t-{i}", "s") for i in range(1000)]
    a, b = SmallestKeys(7), SmallestKeys(7)
    for k in keys:
        a.add(k)
    for k in reversed(keys):
        b.add(k)
    assert a.threshold() == b.threshold()
    assert sum(k < a.threshold() for k in keys) == 7
    assert SmallestKeys(0).threshold() == 0


def test_batched_signatures_equal_one_record_at_a_time():
    from mft_dataprep.words import RecordWords

    rng = random.Random(4)
    texts = [" ".join(f"w{rng.randrange(500)}" for _ in range(n)) for n in (0, 3, 5, 6, 0, 400, 1, 9000, 50, 4)]
    rws, all_hashes, offsets = RecordWords.many([RecordWords.split_text(t) for t in texts])
    dd = NearDeduper(0.85, 128, 5)
    wanted = [0, 1, 2, 3, 4, 5, 7, 8, 9]  # not every record, as when some are contaminated
    batched = dd.signatures_many(all_hashes, offsets, wanted)
    for r, values in zip(wanted, batched, strict=True):
        assert values.tolist() == dd.signature_of_words(words(texts[r])).hashvalues.tolist(), r
