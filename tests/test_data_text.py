"""The rule-based text front end: documented id ranges, exact where the rules are exact."""

from __future__ import annotations

import pytest

from trainer.audio_constants import PHONEME_VOCAB
from trainer.data import text as tx
from trainer.data.text import ARPABET, EN_IDS, english_word, normalize, number_words, phonemize


def test_layout_fills_the_vocabulary_without_overlap():
    ranges = [
        (tx.PUNCT_BASE, tx.EN_BASE),
        (tx.EN_BASE, tx.EN_BASE + len(ARPABET)),
        (tx.CJK_HIGH_BASE, tx.CJK_LOW_BASE),
        (tx.CJK_LOW_BASE, tx.CJK_LOW_BASE + tx.CJK_LOW_SIZE),
        (tx.KANA_BASE, tx.KANA_LONG + 1),
        (tx.HANGUL_L, tx.HANGUL_V),
        (tx.HANGUL_V, tx.HANGUL_T),
        (tx.HANGUL_T, tx.FALLBACK_BASE),
        (tx.FALLBACK_BASE, PHONEME_VOCAB),
    ]
    for (a0, a1), (b0, b1) in zip(ranges, ranges[1:]):
        assert a0 < a1 <= b0 < b1
    assert tx.CJK_LOW_BASE + tx.CJK_LOW_SIZE == tx.KANA_BASE
    assert (tx.CJK_LOW_BASE - tx.CJK_HIGH_BASE) * tx.CJK_LOW_SIZE >= tx.CJK_COUNT
    assert tx.HANGUL_V - tx.HANGUL_L == 19 and tx.HANGUL_T - tx.HANGUL_V == 21 and tx.FALLBACK_BASE - tx.HANGUL_T == 27
    assert PHONEME_VOCAB == 732


def test_every_basic_cjk_character_gets_its_own_pair():
    pairs = {tuple(tx.char_ids(chr(cp))) for cp in range(0x4E00, 0xA000)}
    assert len(pairs) == 0x9FFF - 0x4E00 + 1
    assert all(tx.CJK_HIGH_BASE <= h < tx.CJK_LOW_BASE <= l < tx.KANA_BASE for h, l in pairs)


def test_chinese_two_ids_per_character_and_punctuation():
    p = phonemize("你好，世界。", "zh")
    assert len(p.ids) == 2 * 4 + 2
    assert p.ids[4] == tx.PUNCT[","] and p.ids[-1] == tx.PUNCT["."]
    assert p.chars == [0, 0, 1, 1, 2, 3, 3, 4, 4, 5]
    assert phonemize("你好，世界。", "yue").ids == p.ids


def test_hangul_decomposition_is_exact():
    # 한 = U+D55C = lead ㅎ (18), vowel ㅏ (0), tail ㄴ (4)
    assert tx.char_ids("한") == [tx.HANGUL_L + 18, tx.HANGUL_V + 0, tx.HANGUL_T + 3]
    assert tx.char_ids("가") == [tx.HANGUL_L, tx.HANGUL_V]  # no tail


def test_kana_katakana_folds_onto_hiragana():
    assert tx.char_ids("カ") == tx.char_ids("か") == [tx.KANA_BASE + ord("か") - 0x3041]
    assert tx.char_ids("ー") == [tx.KANA_LONG]


@pytest.mark.parametrize(
    "word,phones",
    [
        ("make", "M EY K"), ("time", "T AY M"), ("cute", "K UW T"), ("city", "S IH T IY"), ("giant", "JH IH AE N T"),
        ("thing", "TH IH NG"), ("nation", "N AE SH AH N"), ("know", "N AA W"), ("the", "DH AH"), ("butter", "B AH T ER"),
        ("words", "W ER D Z"), ("dogs", "D AA G Z"), ("cats", "K AE T S"), ("ship", "SH IH P"), ("phone", "F OW N"),
    ],
)
def test_english_letter_to_sound(word, phones):
    assert english_word(word) == phones.split()


def test_numbers_read_per_language():
    assert number_words("2026") == ["two", "thousand", "twenty", "six"]
    assert number_words("115") == ["one", "hundred", "fifteen"]
    assert number_words("0042") == ["zero", "zero", "four", "two"]
    assert phonemize("3", "zh").ids == tx.char_ids("三")
    assert phonemize("3", "ko").ids == tx.char_ids("삼")
    assert phonemize("12", "en").ids == [EN_IDS[p] for p in english_word("twelve")]


def test_normalisation_and_fallback():
    assert normalize("  Ｈｅｌｌｏ，　café  ") == "Hello, cafe"
    p = phonemize("Привет", "en")
    assert len(p.ids) == 6 and all(tx.FALLBACK_BASE <= i < PHONEME_VOCAB for i in p.ids)
    assert phonemize("hello   world", "en").ids.count(tx.BOUNDARY) == 1
    assert phonemize("...", "en").ids == [tx.PUNCT["."]] * 3
    assert phonemize("\u200b", "en").ids == []


def test_mixed_text_is_deterministic_and_in_range():
    text = "GPT-SoVITS 训练 テスト 한국어 2 times!"
    a, b = phonemize(text, "zh"), phonemize(text, "zh")
    assert a == b and all(0 < i < PHONEME_VOCAB for i in a.ids)
    assert len(a.ids) == len(a.chars) and all(0 <= c < len(a.text) for c in a.chars)
