"""Text -> phoneme ids in the s1 vocabulary (732), offline, rule-based, deterministic.

No pretrained grapheme-to-phoneme model or pronunciation dictionary can be loaded
on our machines, so this front end is honest about what it is: English goes
through letter-to-sound rules, Korean through the Unicode Hangul decomposition
(exact), Japanese kana one id per kana; Chinese characters get a deterministic,
collision-free two-id code that identifies the character but says nothing about
its pronunciation (the model has to learn readings from the audio, as a
character-level TTS does). Everything else falls back to one id per character.
These ids are OUR layout: they are not GPT-SoVITS's symbol table, so a pretrained
GPT-SoVITS s1 checkpoint's phoneme embeddings do not carry over.

Id layout (PHONEME_VOCAB = 732):
    0          padding (never produced)
    1          word boundary (whitespace between words)
    2..12      punctuation classes: , . ! ? ; : - ... quote ( )   (13..19 unused)
    20..58     English phonemes, ARPAbet without stress (AA .. ZH)  (59..99 unused)
    100..227   CJK ideograph, high part: (code point - U+4E00) // 168
    228..395   CJK ideograph, low part:  (code point - U+4E00) % 168
               -> every character of U+4E00..U+9FFF gets its own (high, low) pair;
               ideographs outside that block (extensions, compatibility) are
               folded into it by code point modulo 20992
    396..481   kana: hiragana U+3041..U+3096 (katakana folded onto hiragana)
    482        kana long-vowel mark (U+30FC);                       (483..491 unused)
    492..510   Hangul leading consonants (19)
    511..531   Hangul vowels (21)
    532..558   Hangul trailing consonants (27)
    559..731   fallback: any other letter or symbol, id 559 + code point % 173

English letter-to-sound: a table of ~90 frequent irregular words, then grapheme
rules applied left to right (longest match first, with context: soft c/g before
e/i/y, silent final e, "magic e" lengthening a vowel before consonant + e, r-
controlled vowels, -tion/-sion/-ture, silent k/w/b/gh). It is right for regular
spellings and wrong for many irregular ones. Numbers are read as words in English
(up to 999,999; longer digit strings digit by digit), as Chinese numeral
characters digit by digit in zh/yue/ja, and with Sino-Korean digit syllables in ko.
Latin words inside Chinese, Japanese or Korean text use the English rules.
Text is NFKC-normalised first (full-width forms become ASCII); accented Latin
letters lose their accents.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from trainer.audio_constants import PHONEME_VOCAB

PAD = 0
BOUNDARY = 1
PUNCT_BASE = 2
EN_BASE = 20
CJK_HIGH_BASE, CJK_LOW_BASE, CJK_LOW_SIZE = 100, 228, 168
CJK_FIRST, CJK_COUNT = 0x4E00, 20992  # U+4E00..U+9FFF
KANA_BASE, KANA_FIRST, KANA_LAST, KANA_LONG = 396, 0x3041, 0x3096, 482
HANGUL_L, HANGUL_V, HANGUL_T = 492, 511, 532
FALLBACK_BASE = 559
FALLBACK_SIZE = PHONEME_VOCAB - FALLBACK_BASE  # 173

ARPABET = (
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K "
    "L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH"
).split()
EN_IDS = {p: EN_BASE + i for i, p in enumerate(ARPABET)}

# punctuation class index (id = PUNCT_BASE + index) for each character (after NFKC)
_PUNCT_CLASSES = (",、", ".。", "!", "?", ";", ":", "-—–~", "…", "'\"“”‘’「」『』《》〈〉", "([{【〔", ")]}】〕")
PUNCT = {ch: PUNCT_BASE + i for i, chars in enumerate(_PUNCT_CLASSES) for ch in chars}

_ZH_DIGITS = "零一二三四五六七八九"
_KO_DIGITS = "영일이삼사오육칠팔구"


@dataclass(frozen=True)
class Phonemes:
    ids: list[int]  # phoneme ids, each in 1..731
    chars: list[int]  # per id: index of the character of `text` it came from (for BERT alignment)
    text: str  # the normalised text the indices refer to


def normalize(text: str) -> str:
    """NFKC, accents stripped from Latin letters (é -> e), whitespace collapsed."""
    out = []
    for c in unicodedata.normalize("NFKC", text):
        if not c.isascii() and "LATIN" in unicodedata.name(c, ""):
            base = unicodedata.normalize("NFD", c)[0]
            c = base if base.isascii() else c
        out.append(c)
    return " ".join("".join(out).split())


def phonemize(text: str, language: str) -> Phonemes:
    """Phoneme ids for `text` in `language` (zh, ja, en, ko, yue), see the module docstring."""
    norm = normalize(text)
    ids: list[int] = []
    chars: list[int] = []
    for match in _TOKENS.finditer(norm):
        token, start = match.group(), match.start()
        if token.isspace():
            if ids and ids[-1] != BOUNDARY:
                ids.append(BOUNDARY)
                chars.append(start)
            continue
        for pid, offset in _token_ids(token, language):
            ids.append(pid)
            chars.append(start + offset)
    while ids and ids[-1] == BOUNDARY:
        ids.pop()
        chars.pop()
    assert all(0 < i < PHONEME_VOCAB for i in ids)
    return Phonemes(ids, chars, norm)


_TOKENS = re.compile(r"\s+|[A-Za-z]+(?:'[A-Za-z]+)*|[0-9]+|.", re.DOTALL)


def _token_ids(token: str, language: str) -> list[tuple[int, int]]:
    """[(id, character offset within token)] for one token."""
    if token[0].isascii() and token[0].isalpha():
        word = token.lower().replace("'", "")
        return [(EN_IDS[p], 0) for p in english_word(word)]
    if token[0].isdigit():
        return _number_ids(token, language)
    return [(pid, 0) for pid in char_ids(token)]


def _number_ids(digits: str, language: str) -> list[tuple[int, int]]:
    if language == "en":
        words = number_words(digits)
        return [(EN_IDS[p], 0) for w in words for p in english_word(w)]
    table = _KO_DIGITS if language == "ko" else _ZH_DIGITS
    return [(pid, k) for k, d in enumerate(digits) for pid in char_ids(table[int(d)])]


def char_ids(ch: str) -> list[int]:
    """Ids of one non-Latin character (CJK, kana, Hangul, punctuation, fallback)."""
    cp = ord(ch)
    if ch in PUNCT:
        return [PUNCT[ch]]
    if _is_ideograph(cp):
        index = (cp - CJK_FIRST) % CJK_COUNT
        return [CJK_HIGH_BASE + index // CJK_LOW_SIZE, CJK_LOW_BASE + index % CJK_LOW_SIZE]
    if 0x30A1 <= cp <= 0x30F6:  # katakana -> hiragana
        cp -= 0x60
    if KANA_FIRST <= cp <= KANA_LAST:
        return [KANA_BASE + cp - KANA_FIRST]
    if cp == 0x30FC:
        return [KANA_LONG]
    if 0xAC00 <= cp <= 0xD7A3:  # Hangul syllable = 588 * lead + 28 * vowel + tail
        s = cp - 0xAC00
        lead, vowel, tail = s // 588, (s % 588) // 28, s % 28
        return [HANGUL_L + lead, HANGUL_V + vowel] + ([HANGUL_T + tail - 1] if tail else [])
    if unicodedata.category(ch)[0] in "LNSP":  # letters, numbers, symbols, punctuation
        return [FALLBACK_BASE + cp % FALLBACK_SIZE]
    return []  # control and format characters say nothing


def _is_ideograph(cp: int) -> bool:
    return 0x3400 <= cp <= 0x4DBF or 0x4E00 <= cp <= 0x9FFF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x3FFFF


# --- numbers (English) ----------------------------------------------------------------

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(digits: str) -> list[str]:
    """'2026' -> ['two', 'thousand', 'twenty', 'six']; > 999,999 or leading 0: digit by digit."""
    if len(digits) > 6 or (len(digits) > 1 and digits[0] == "0"):
        return [_ONES[int(d)] for d in digits]
    n = int(digits)
    if n == 0:
        return ["zero"]
    thousands, rest = divmod(n, 1000)
    words = (_below_thousand(thousands) + ["thousand"]) if thousands else []
    return words + _below_thousand(rest)


def _below_thousand(n: int) -> list[str]:
    hundreds, rest = divmod(n, 100)
    words = [_ONES[hundreds], "hundred"] if hundreds else []
    if rest >= 20:
        words.append(_TENS[rest // 10])
        if rest % 10:
            words.append(_ONES[rest % 10])
    elif rest:
        words.append(_ONES[rest])
    return words


# --- English letter-to-sound ------------------------------------------------------------

_EXCEPTIONS = {
    "a": "AH", "the": "DH AH", "of": "AH V", "to": "T UW", "and": "AE N D", "in": "IH N", "is": "IH Z",
    "you": "Y UW", "that": "DH AE T", "it": "IH T", "he": "HH IY", "was": "W AA Z", "for": "F AO R",
    "on": "AA N", "are": "AA R", "as": "AE Z", "with": "W IH DH", "his": "HH IH Z", "they": "DH EY",
    "i": "AY", "at": "AE T", "be": "B IY", "this": "DH IH S", "have": "HH AE V", "from": "F R AH M",
    "or": "AO R", "one": "W AH N", "had": "HH AE D", "by": "B AY", "word": "W ER D", "but": "B AH T",
    "not": "N AA T", "what": "W AH T", "all": "AO L", "were": "W ER", "we": "W IY", "when": "W EH N",
    "your": "Y AO R", "can": "K AE N", "said": "S EH D", "there": "DH EH R", "use": "Y UW Z",
    "each": "IY CH", "which": "W IH CH", "she": "SH IY", "do": "D UW", "how": "HH AW",
    "their": "DH EH R", "if": "IH F", "will": "W IH L", "other": "AH DH ER", "about": "AH B AW T",
    "out": "AW T", "many": "M EH N IY", "then": "DH EH N", "them": "DH EH M", "these": "DH IY Z",
    "so": "S OW", "some": "S AH M", "her": "HH ER", "would": "W UH D", "make": "M EY K",
    "like": "L AY K", "into": "IH N T UW", "time": "T AY M", "has": "HH AE Z", "two": "T UW",
    "more": "M AO R", "go": "G OW", "see": "S IY", "no": "N OW", "could": "K UH D", "people": "P IY P AH L",
    "my": "M AY", "than": "DH AE N", "been": "B IH N", "who": "HH UW", "now": "N AW", "any": "EH N IY",
    "come": "K AH M", "done": "D AH N", "does": "D AH Z", "give": "G IH V", "live": "L IH V",
    "four": "F AO R", "eight": "EY T", "once": "W AH N S", "only": "OW N L IY", "very": "V EH R IY",
    "voice": "V OY S", "hello": "HH AH L OW", "world": "W ER L D", "thank": "TH AE NG K",
    "thanks": "TH AE NG K S", "our": "AW ER", "me": "M IY", "there's": "DH EH R Z", "get": "G EH T",
    "again": "AH G EH N", "water": "W AO T ER", "good": "G UH D", "look": "L UH K", "book": "B UH K",
}
_EXCEPTIONS = {w: p.split() for w, p in _EXCEPTIONS.items()}

_VOWELS = set("aeiou")
_SHORT = {"a": "AE", "e": "EH", "i": "IH", "o": "AA", "u": "AH", "y": "IH"}
_LONG = {"a": "EY", "e": "IY", "i": "AY", "o": "OW", "u": "UW", "y": "AY"}
# (grapheme, phonemes), longest first; context rules are in _rule_at
_GRAPHEMES = sorted(
    {
        "tch": "CH", "dge": "JH", "igh": "AY", "eigh": "EY", "tion": "SH AH N", "sion": "ZH AH N",
        "ture": "CH ER", "ough": "AO", "augh": "AO", "sh": "SH", "ch": "CH", "th": "TH", "ph": "F",
        "wh": "W", "ck": "K", "ng": "NG", "qu": "K W", "ee": "IY", "ea": "IY", "oo": "UW", "ou": "AW",
        "ai": "EY", "ay": "EY", "oi": "OY", "oy": "OY", "au": "AO", "aw": "AO", "oa": "OW", "oe": "OW",
        "ue": "UW", "ew": "UW", "ei": "EY", "ey": "EY", "ie": "IY", "air": "EH R", "ear": "IH R",
        "ar": "AA R", "er": "ER", "ir": "ER", "ur": "ER", "or": "AO R", "x": "K S",
    }.items(),
    key=lambda kv: -len(kv[0]),
)
_CONSONANTS = {
    "b": "B", "c": "K", "d": "D", "f": "F", "g": "G", "h": "HH", "j": "JH", "k": "K", "l": "L", "m": "M",
    "n": "N", "p": "P", "q": "K", "r": "R", "s": "S", "t": "T", "v": "V", "w": "W", "x": "K S", "y": "Y", "z": "Z",
}
_VOICED_END = set("bdgvzlmnr") | _VOWELS


def english_word(word: str) -> list[str]:
    """ARPAbet phonemes of one lower-case ASCII word (exceptions, then rules)."""
    if word in _EXCEPTIONS:
        return list(_EXCEPTIONS[word])
    if word.endswith("s") and word[:-1] in _EXCEPTIONS and len(word) > 2:  # words, thanks
        return english_word(word[:-1]) + ["Z"]
    out: list[str] = []
    i = 0
    while i < len(word):
        phones, step = _rule_at(word, i)
        doubled = len(phones) == 1 and out and out[-1] == phones[0] and phones[0] not in ARPABET_VOWELS
        if not doubled:  # "ll", "tt", "ss": one consonant
            out.extend(phones)
        i += step
    return out


ARPABET_VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}


def _rule_at(word: str, i: int) -> tuple[list[str], int]:
    """(phonemes, letters consumed) for the grapheme starting at word[i]."""
    rest, ch, end = word[i:], word[i], len(word)
    nxt = word[i + 1] if i + 1 < end else ""
    if i == 0 and rest[:2] in ("kn", "wr", "gn"):
        return [], 1  # silent first letter
    if rest == "mb" or (rest[:2] == "gh" and i > 0):
        return (["M"] if rest == "mb" else []), 2
    if ch == "e" and i == end - 1 and end > 2 and not _ends_in_le(word):
        return [], 1  # silent final e
    if rest == "le" and i > 0 and word[i - 1] not in _VOWELS:
        return ["AH", "L"], 2  # table, little
    if ch == "s" and i == end - 1 and i > 0 and word[i - 1] in _VOICED_END:
        return ["Z"], 1
    for grapheme, phones in _GRAPHEMES:
        if rest.startswith(grapheme):
            if grapheme == "x" and i == 0:
                return ["Z"], 1
            return phones.split(), len(grapheme)
    if ch in "cg":
        soft = nxt in ("e", "i", "y")
        return ([("S" if ch == "c" else "JH")] if soft else [("K" if ch == "c" else "G")]), 1
    if ch in _VOWELS or (ch == "y" and i > 0):
        return [_vowel(word, i)], 1
    return _CONSONANTS.get(ch, "").split(), 1


def _vowel(word: str, i: int) -> str:
    ch, end = word[i], len(word)
    if ch == "y":
        return "IY" if i == end - 1 and end > 2 else ("AY" if i == end - 1 else "IH")
    if i == end - 1:  # open final vowel: go, he, pizza
        return {"a": "AH", "e": "IY", "i": "IY", "o": "OW", "u": "UW"}[ch]
    # magic e: vowel + one consonant + e (+ s/d) at the end: make, these, time, home, cute
    tail = word[i + 1 :]
    if len(tail) >= 2 and tail[0] not in _VOWELS and tail[1] == "e" and (len(tail) == 2 or tail[2:] in ("s", "d")):
        return _LONG[ch]
    return _SHORT[ch]


def _ends_in_le(word: str) -> bool:
    return word.endswith("le") and len(word) > 2 and word[-3] not in _VOWELS
