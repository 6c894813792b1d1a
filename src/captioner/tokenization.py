"""Caption tokenization identical to the COCO caption evaluation (pycocoevalcap 1.2).

pycocoevalcap runs Stanford's Java ``PTBTokenizer`` (CoreNLP 3.4.1) with ``-preserveLines
-lowerCase`` over all captions joined by newlines, then drops the tokens in its ``PUNCTUATIONS``
list. This module re-implements that pipeline in pure Python: a longest-match lexer whose rules
were reconstructed from the JFlex grammar of that tokenizer (``PTBLexer.flex``) and checked
against the jar itself, then the same lower-casing and punctuation filter. Training text and
scoring both use it, so a model is trained on exactly the tokens it is scored on.
``benchmarks/ptb_tokenizer_parity.py`` measures 0 differing captions on all of Flickr8k and on
220,000 random captions made of tricky pieces (contractions, abbreviations, URLs, smileys...).

Behaviours reproduced on purpose, because the COCO scores depend on them:

* ``-LRB-``/``-RRB-`` (and ``-LSB-``, ``-LCB-``...) are lower-cased *before* the filter, so
  ``(``, ``)``, ``[``, ``{`` survive as ``-lrb-``, ``-rrb-``, ``-lsb-``, ``-lcb-`` tokens;
* ``cannot``, ``gonna``, ``can't`` become ``can not``, ``gon na``, ``ca n't``;
* the lexer looks past the end of a caption into the *next* one of the batch: ``"x e."``
  followed by ``"A dog"`` gives ``e``, followed by ``"a dog"`` gives ``e.``.
  :func:`ptb_tokenize_lines` reproduces that for a batch in pycocoevalcap's order;
  :func:`ptb_tokenize` sees one caption followed by the end of the text.

Known, documented differences from the Java tokenizer (none occur in Flickr8k or in captions a
model writes): characters whose Unicode class differs between Python's and Java 17's tables;
line separators other than ``\\n`` inside a caption (``\\r``, ``\\u2028``...) are treated as
spaces, whereas pycocoevalcap would emit an extra output line and misalign every later caption
of the batch.

This module is a leaf: it imports nothing from ``captioner`` and knows nothing about metrics,
vocabularies or models.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

__all__ = ["PTB_PUNCTUATION", "ptb_tokenize", "ptb_tokenize_lines"]

# pycocoevalcap's PTBTokenizer.PUNCTUATIONS, verbatim. It is applied after lower-casing, so its
# upper-case bracket names never match anything (see the module docstring).
PTB_PUNCTUATION: frozenset[str] = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
     ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# --------------------------------------------------------------------------------------------
# Character classes and macros, named as in PTBLexer.flex. JFlex is %caseless for literal text
# but not inside character classes, so literal words are wrapped in (?i:...) and classes are not.
# Python's alternation is ordered, not longest, so alternatives are written longest-first.
# --------------------------------------------------------------------------------------------
_SPACE = "[ \t\u00a0\u2000-\u200a\u3000]"
_NEWLINE = "(?:\r\n|[\r\n\u2028\u2029\x0b\x0c\x85])"
_SPACENL = f"(?:{_SPACE}|{_NEWLINE})"
_SGML_NAME = r"[A-Za-z][A-Za-z0-9_:.-]*"
_SGML = (rf"<(?:[!?][A-Za-z-][^>\r\n]*|{_SGML_NAME}(?:[ ]+(?:{_SGML_NAME}[ ]*=[ ]*"
         rf"(?:'[^'\r\n]*'|\"[^\"\r\n]*\")|{_SGML_NAME}))*[ ]*/?|/{_SGML_NAME})[ ]*>")
_SENTEND = f"{_SPACENL}(?:{_SPACENL}|[A-Z]|{_SGML})"
# Java's Character.isLetter / isDigit: Python's \w also accepts numeric characters such as "½" or
# "²" (str.isnumeric), which Java classes as neither, so those are excluded explicitly.
# (Generated from unicodedata: characters with str.isnumeric() and not str.isdecimal().)
_NUMERIC_NOT_DIGIT = (
    "\u00b2-\u00b3\u00b9\u00bc-\u00be\u09f4-\u09f9\u0b72-\u0b77\u0bf0-\u0bf2\u0c78-\u0c7e"
    "\u0d58-\u0d5e\u0d70-\u0d78\u0f2a-\u0f33\u1369-\u137c\u16ee-\u16f0\u17f0-\u17f9\u19da"
    "\u2070\u2074-\u2079\u2080-\u2089\u2150-\u2182\u2185-\u2189\u2460-\u249b\u24ea-\u24ff"
    "\u2776-\u2793\u2cfd\u3007\u3021-\u3029\u3038-\u303a\u3192-\u3195\u3220-\u3229"
    "\u3248-\u324f\u3251-\u325f\u3280-\u3289\u32b1-\u32bf\u3405\u3483\u382a\u3b4d\u4e00\u4e03"
    "\u4e07\u4e09\u4e5d\u4e8c\u4e94\u4e96\u4ebf-\u4ec0\u4edf\u4ee8\u4f0d\u4f70\u5104\u5146"
    "\u5169\u516b\u516d\u5341\u5343-\u5345\u534c\u53c1-\u53c4\u56db\u58f1\u58f9\u5e7a"
    "\u5efe-\u5eff\u5f0c-\u5f0e\u5f10\u62fe\u634c\u67d2\u6f06\u7396\u767e\u8086\u842c\u8cae"
    "\u8cb3\u8d30\u9621\u9646\u964c\u9678\u96f6\ua6e6-\ua6ef\ua830-\ua835\uf96b\uf973\uf978"
    "\uf9b2\uf9d1\uf9d3\uf9fd"
)
_LETTER = rf"[^\W\d_{_NUMERIC_NOT_DIGIT}]"
_LETTER_OR_DIGIT = rf"[^\W_{_NUMERIC_NOT_DIGIT}]"
_DIGIT = r"\d"
_APOS = "(?:['\u0092\u2019]|&apos;)"
_APOSETC = f"(?:{_APOS}|[`\u0091\u2018\u201b])"
_HYPHEN = "[-_\u058a\u2010\u2011]"

_DATE = rf"{_DIGIT}{{1,2}}[-/]{_DIGIT}{{1,2}}[-/]{_DIGIT}{{2,4}}"
_NUM = rf"{_DIGIT}*(?:[.:,\u00ad\u066b\u066c]{_DIGIT}+)+|{_DIGIT}+"
_NUMBER = rf"[-+]?(?:{_NUM})"
_FRAC = rf"(?:{_DIGIT}{{1,4}}[- \u00a0])?{_DIGIT}{{1,4}}(?:\\?/|\u2044){_DIGIT}{{1,4}}"
# Word characters beyond Java letters: the soft hyphen (removed from the token) and combining
# marks and other code points PTBLexer.flex lists explicitly.
_WORD_EXTRA = (
    "\u00ad\u0237-\u024f\u02c2-\u02c5\u02d2-\u02df\u02e5-\u02ff\u0300-\u036f\u0370-\u037d"
    "\u0384\u0385\u03cf\u03f6\u03fc-\u03ff\u0483-\u0487\u04cf\u04f6-\u04ff\u0510-\u0525"
    "\u055a-\u055f\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7\u0615-\u061a\u063b-\u063f"
    "\u064b-\u065e\u0670\u06d6-\u06ef\u06fa-\u06ff\u070f\u0711\u0730-\u074f\u0750-\u077f"
    "\u07a6-\u07b1\u07ca-\u07f5\u07fa\u0900-\u0903\u093c\u093e-\u094e\u0951-\u0955"
    "\u0962-\u0963\u0981-\u0983\u09bc-\u09c4\u09c7\u09c8\u09cb-\u09cd\u09d7\u09e2\u09e3"
    "\u0a01-\u0a03\u0a3c\u0a3e-\u0a4f\u0a81-\u0a83\u0abc-\u0acf\u0b82\u0bbe-\u0bc2"
    "\u0bc6-\u0bc8\u0bca-\u0bcd\u0c01-\u0c03\u0c3e-\u0c56\u0d3e-\u0d44\u0d46-\u0d48"
    "\u0e30-\u0e3a\u0e47-\u0e4e\u0eb1-\u0ebc\u0ec8-\u0ecd"
)
_WORD_LETTER = f"(?:{_LETTER}|[{_WORD_EXTRA}])"
_WORD_LETTER_OR_DIGIT = f"(?:{_LETTER_OR_DIGIT}|[{_WORD_EXTRA}])"
_WORD = rf"{_WORD_LETTER}{_WORD_LETTER_OR_DIGIT}*(?:[.!?]{_WORD_LETTER}{_WORD_LETTER_OR_DIGIT}*)*"
_THING_PART = rf"(?:[dDoOlL]{_APOSETC}{_LETTER_OR_DIGIT})?{_LETTER_OR_DIGIT}+"
_THING = rf"{_THING_PART}(?:{_HYPHEN}{_THING_PART})*"
_THINGA = r"[A-Z]+(?:(?:[+&]|&amp;)[A-Z]+)+"
_THING3 = r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"
_ACRO = (r"(?i:u)\.(?i:s)\.-(?:(?i:u)\.(?i:s)\.(?i:s)\.(?i:r)|(?i:u)\.(?i:k))"
         r"|(?i:canada|sino|korean|eu|japan|non)-(?i:u)\.(?i:s)|[A-Za-z](?:\.[A-Za-z])+")
_HTHING = rf"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:(?:{_ACRO})\.|[A-Za-z0-9\u00ad]+))+"
_REDAUX = rf"{_APOS}(?:(?i:re|ve|ll)|[msdMSD])"
_SWORD = r"[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*"
_SREDAUX = rf"(?i:n){_APOSETC}(?i:t)"

_ABMONTH = "jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec"
_ABDAYS = "mon|tues|tue|wed|thurs|thu|fri"
_ABSTATE_CASELESS = ("ala|ariz|calif|colo|conn|dak|del|fla|ga|ind|kans|kan|ky|la|md|mich|minn"
                     "|mo|mont|neb|nev|okla|pa|penn|tenn|tex|va|vt|wisc|wis|wyo")
# Ark, Ill, Mass, Miss, Ore, Wash: first letter is a character class, so it must be upper-case.
_ABSTATE = f"(?i:{_ABSTATE_CASELESS})|A(?i:rk)|I(?i:ll)|M(?i:ass)|M(?i:iss)|O(?i:re)|W(?i:ash)"
_ABCOMP = "inc|cos|co|corp|pptys|ppty|ptys|pty|ltd|plc|bancorp|bhd|assn|univ|intl|sys"
_ABNUM = "ph|tel|est|ext|sq|ft"
# Abbreviations recognised only before a number ("No. 5", "fig. 3").
_ABBREV3 = r"(?i:figs|fig|ca|prop|nos|no|art|bldg|pp|op)\."
_ABPTIT = r"jr|sr|bros|ed\.d|ph\.d|blvd|rd|esq"
_ABBREV1 = (f"(?:{_ABSTATE}|(?i:{_ABMONTH}|{_ABDAYS}|{_ABCOMP}|{_ABNUM}|{_ABPTIT}|etc|al|seq))"
            r"\.")
_ABTITLE = ("(?i:mrs|mr|ms|drs|dr|profs|prof|sens|sen|reps|rep|attys|atty|lt|col|gen|messrs"
            "|govs|gov|adm|rev|maj|sgt|cpl|pvt|mt|capt|ste|st|ave|pres|lieut|hon|brig|comdr"
            "|cmdr|pfc|spc|supts|supt|det)|M(?i:iss)")
_ABCOMP2 = "(?i:invt|elec|natl|mfg|mtg|dept)"
_ABBREV4 = (rf"{_ACRO}|(?i:a\.k\.a)|{_ABTITLE}|(?i:vs|alex|wm|jos|cie|cf|treas)|{_ABCOMP2}"
            r"|[A-Za-z]")
_ACRONYM_FOLLOWERS = (
    "About|According|Additionally|After|An|A|As|At|But|Earlier|He|Her|Here|However|If|In|It"
    "|Last|Many|More|Mr\\.|Ms\\.|Now|Once|One|Other|Our|She|Since|So|Some|Such|That|The|Then"
    "|There|These|They|This|We|When|While|What|Yet|You"
)
_PHONE = (r"(?:\([0-9]{2,3}\)[ \u00a0]?|(?:\+\+?)?(?:[0-9]{2,4}[- \u00a0])?[0-9]{2,4}[- \u00a0])"
          r"[0-9]{3,4}[- \u00a0]?[0-9]{3,5}"
          r"|(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5}")
_LDOTS = "\\.{3,5}|(?:\\.[ \u00a0]){2,4}\\.|[\u0085\u2026]"
_INSENTP = "[,;:\u3001]"
# Macros with alternatives become one rule per alternative, so that the longest match is chosen
# among them as JFlex does (Python's alternation takes the first that matches).
_QUOTES = [_APOS, "''", ("[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094"
                       "\u201e\u201f\u2039\u203a\u00ab\u00bb]{1,2}")]
_DBLQUOT = '(?:"|&quot;)'
_APOWORD = [
    rf"{_APOS}(?i:n){_APOS}?", rf"[lLdDjJ]{_APOS}", rf"(?i:dunkin){_APOS}", rf"(?i:somethin){_APOS}",
    rf"(?i:ol){_APOS}", rf"{_APOS}(?i:em)", rf"[A-HJ-XZn]{_APOSETC}{_LETTER}{{2}}{_LETTER}*",
    rf"{_APOS}[2-9]0(?i:s)", rf"{_APOS}(?i:till?)",
    rf"{_LETTER}+[aeiouyAEIOUY]{_APOSETC}[aeiouA-Z]{_LETTER}*", rf"{_APOS}(?i:cause)",
    r"(?i:cont'd)\.?", r"(?i:'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)",
]
_MISCSYMBOL = (
    "[+%&~^|\\\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00b3\u00b4-\u00ba\u00d7"
    "\u00f7\u0387\u05be\u05c0\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614"
    "\u061b\u061e\u066a\u066d\u0703-\u070d\u07f6\u07f7\u07f8\u0964\u0965\u0e4f\u1fbd\u2016"
    "\u2017\u2020-\u2023\u2030-\u2038\u203b\u203e-\u2042\u2044\u207a-\u207f\u208a-\u208e"
    "\u2100-\u214f\u2190-\u21ff\u2200-\u2bff\u3012\u30fb\uff01-\uff0f\uff1a-\uff20"
    "\uff3b-\uff40\uff5b-\uff65]"
)

# File names ("photo.jpg", "2.x"), kept whole when followed by a space, newline or . , ! ?
_FILENAME_EXT = ("class|docx|html|java|jpeg|bat|bmp|cgi|cpp|dll|doc|exe|gif|htm|jar|jpg|mov|mp3"
                 "|pdf|php|png|ppt|sql|tar|txt|wav|xml|zip|gz|pl|ps|py|c|h|x")
_FILENAME = rf"{_WORD_LETTER_OR_DIGIT}+(?:\.{_WORD_LETTER_OR_DIGIT}+)*\.(?i:{_FILENAME_EXT})"
_SMILEY = r"[<>]?[:;=][-o*']?[()DPdpO\\{@|\[\]]"
_ASIAN_SMILEY = (r"[\^x=~<>]\.\[\^x=~<>]|[-\^x=~<>']_[-\^x=~<>']"
                 r"|\([-\^x=~<>'][_.]?[-\^x=~<>']\)|\([\^x=~<>']-[\^x=~<>'`]\)")

# --------------------------------------------------------------------------------------------
# Token normalisations applied by the rule actions (ptb3Escaping defaults of 3.4.1, without
# americanize and without escaping / and *).
# --------------------------------------------------------------------------------------------


def _latex_quotes(text: str, probably_left: bool) -> str:
    if probably_left:
        text = re.sub("&apos;|'", "`", text)
        text = re.sub('"|&quot;', "``", text)
    else:
        text = re.sub("&apos;|'", "'", text)
        text = re.sub('"|&quot;', "''", text)
    text = re.sub("[\u0091\u2018\u201b\u2039]", "`", text)
    text = re.sub("[\u0092\u2019\u203a]", "'", text)
    text = re.sub("[\u0093\u201c\u00ab]", "``", text)
    return re.sub("[\u0094\u201d\u00bb]", "''", text)


def _remove_soft_hyphens(text: str) -> str:
    return text.replace("\u00ad", "") or "-"


def _normalize_currency(text: str) -> str:
    text = text.replace("\u00a2", "cents").replace("\u00a3", "#")
    return re.sub("[\u0080\u00a4\u20a0\u20ac]", "$", text)


_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}

# An action receives the token text (the match without any trailing context) and returns the
# tokens to emit and how many characters it consumed (fewer than matched: JFlex ``yypushback``).
_Action = Callable[[str], tuple[list[str], int]]


def _emit(transform: Callable[[str], str] | None = None) -> _Action:
    def action(text: str) -> tuple[list[str], int]:
        return [transform(text) if transform else text], len(text)
    return action


def _skip(text: str) -> tuple[list[str], int]:
    return [], len(text)


def _split_after(count: int) -> _Action:
    """Emit the first ``count`` characters and lex the rest again (JFlex ``yypushback``)."""
    def action(text: str) -> tuple[list[str], int]:
        return [text[:count]], count
    return action


def _acronym_then_period(text: str) -> tuple[list[str], int]:
    # "U.S. The" -> "U.S." then "." again; a single letter ("I. The") -> "I" then ".".
    if len(text) == 2:
        return [text[0]], 1
    return [text], len(text) - 1


def _abbreviation_then_period(text: str) -> tuple[list[str], int]:
    # Sentence-final abbreviation: keep "etc." and let the period be read again as its own token.
    return [text], len(text) - 1


def _nbsp(text: str) -> str:
    return text.replace(" ", "\u00a0")


def _phone(text: str) -> str:
    return _nbsp(text).replace("(", "-LRB-").replace(")", "-RRB-")


def _parentheses(text: str) -> str:
    return text.replace("(", "-LRB-").replace(")", "-RRB-")


def _hyphens(text: str) -> str:
    return "--" if 3 <= len(text) <= 4 else text


# (pattern, action). The pattern is matched at the current position; a group named "tok" marks
# the token when the rule has JFlex trailing context (r1/r2): the whole match competes for the
# longest match, only "tok" is consumed. Ties go to the earlier rule, as in JFlex.
_RULE_SPECS: list[tuple[str, _Action]] = [
    (r"(?i:cannot)", _split_after(3)),
    (r"(?i:gimme|gonna|gotta|lemme|wanna)", _split_after(3)),
    (rf"{_APOS}(?i:tis|twas)", _split_after(2)),
    (_SGML, _emit(_nbsp)),
    ("&(?:MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", _emit(lambda t: "--")),
    (r"(?i:&amp;)", _emit(lambda t: "&")),
    (r"&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);", _emit()),
    (rf"(?P<tok>{_WORD}){_REDAUX}", _emit(_remove_soft_hyphens)),
    (rf"(?P<tok>{_SWORD}){_SREDAUX}", _emit(_remove_soft_hyphens)),
    (_WORD, _emit(_remove_soft_hyphens)),
    *[(alternative, _emit()) for alternative in _APOWORD],
    (rf"(?P<tok>(?i:y){_APOS}){_LETTER}", _emit()),
    (r"https?://[^ \t\n\f\r\"<>|(){}]+[^ \t\n\f\r\"<>|.!?(){},-]", _emit()),
    (r"(?:(?:www\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})"
     r"|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+(?i:com|net|org|edu)))"
     r"(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?", _emit()),
    (r"(?:&lt;|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|(){}\u00a0]*@"
     r"(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\.)*[^ \t\n\f\r\"<>|(){}.\u00a0]+(?:&gt;|>)?",
     _emit()),
    (rf"@[a-zA-Z_][a-zA-Z_0-9]*|#{_WORD_LETTER}+", _emit()),
    (rf"(?P<tok>{_REDAUX})[^A-Za-z]", _emit(lambda t: _latex_quotes(t, False))),
    (_SREDAUX, _emit(lambda t: _latex_quotes(t, False))),
    (_DATE, _emit()),
    (_NUMBER, _emit(_remove_soft_hyphens)),
    ("[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)",
     _emit()),
    (_FRAC, _emit(_nbsp)),
    ("[\u00bc\u00bd\u00be\u2153-\u215e]", _emit(lambda t: _FRACTIONS.get(t, t))),
    (rf"-(?i:rrb|lrb|rcb|lcb|rsb|lsb)-|(?i:c\.d\.s|pro-|anti-|s(?:&|&amp;)p-500|s(?:&|&amp;)ls)"
     rf"|(?i:cap){_APOS}(?i:n)|(?i:c){_APOS}(?i:est)", _emit(lambda t: t.replace("&amp;", "&"))),
    (_THING3, _emit()),
    (r"[A-Z]*\$|#", _emit()),
    ("[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]",
     _emit(_normalize_currency)),
    (rf"(?P<tok>(?:[A-Za-z]|{_ACRO})\.){_SPACENL}+(?:{_ACRONYM_FOLLOWERS}|{_SGML}){_SPACENL}",
     _acronym_then_period),
    (rf"(?P<tok>{_ABBREV3}){_SPACENL}?{_DIGIT}", _emit()),
    (rf"(?P<tok>{_ABBREV1}){_SENTEND}", _abbreviation_then_period),
    # Measured on the Java tokenizer: an ABBREV1 competes as if two more characters belonged to
    # it (whatever they are), so "Inc.y x" is "Inc." "y" while "Inc.yes" stays one word.
    (rf"(?P<tok>{_ABBREV1})(?s:..)", _emit()),
    (_ABBREV1, _emit()),
    (rf"(?:{_ABBREV4})\.", _emit()),
    (rf"(?P<tok>{_ABBREV4}){_SPACE}", _emit()),
    (rf"(?P<tok>{_ACRO}){_SPACENL}", _emit()),
    (rf"(?P<tok>{_FILENAME})(?:{_SPACENL}|[.?!,])", _emit()),
    (rf"(?P<tok>{_APOS}[0-9][0-9]){_SPACENL}", _emit()),
    (rf"(?P<tok>{_WORD}\.){_INSENTP}", _emit(_remove_soft_hyphens)),
    (_PHONE, _emit(_phone)),
    # A smiley needs one following character that is not an ASCII letter or digit (not the end).
    (rf"(?P<tok>{_SMILEY})[^A-Za-z0-9]", _emit(_parentheses)),
    (_ASIAN_SMILEY, _emit(_parentheses)),
    (rf"(?P<tok>{_DBLQUOT})[A-Za-z0-9$]", _emit(lambda t: _latex_quotes(t, True))),
    (_DBLQUOT, _emit(lambda t: _latex_quotes(t, False))),
    ("\x7f", _skip),
    ("[<\\[]|&lt;", _emit(lambda t: "-LSB-" if t == "[" else "<")),
    ("[>\\]]|&gt;", _emit(lambda t: "-RSB-" if t == "]" else ">")),
    (r"\{", _emit(lambda t: "-LCB-")),
    (r"\}", _emit(lambda t: "-RCB-")),
    (r"\(", _emit(lambda t: "-LRB-")),
    (r"\)", _emit(lambda t: "-RRB-")),
    (r"-+", _emit(_hyphens)),
    (_LDOTS, _emit(lambda t: "...")),
    (r"@+|#+|_+", _emit()),
    (r"\*+|(?:\\\*){1,3}", _emit()),
    (_INSENTP, _emit()),
    (r"[?!]+", _emit()),
    ("[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]", _emit()),
    (r"=", _emit()),
    (r"/", _emit()),
    (rf"(?P<tok>{_HTHING}\.){_INSENTP}", _emit(_remove_soft_hyphens)),
    (_HTHING, _emit(_remove_soft_hyphens)),
    (rf"(?P<tok>{_THING}\.){_INSENTP}", _emit()),
    (_THING, _emit()),
    (rf"(?P<tok>{_THINGA}\.){_INSENTP}", _emit(lambda t: t.replace("&amp;", "&"))),
    (_THINGA, _emit(lambda t: t.replace("&amp;", "&"))),
    (r"(?P<tok>')[A-Za-z][^ \t\n\r\u00a0]", _emit(lambda t: _latex_quotes(t, True))),
    (_REDAUX, _emit(lambda t: _latex_quotes(t, False))),
    *[(alternative, _emit(lambda t: _latex_quotes(t, False))) for alternative in _QUOTES],
    (r"<<|>>", _emit()),
    (_MISCSYMBOL, _emit()),
    (f"\\x00|{_SPACE}+|[\u200b\u200e\u200f\ufeff]", _skip),
    (r"&nbsp;", _skip),
    (r"(?s:.)", _skip),  # untokenizable character: the Java tokenizer deletes it
]

_RULES: list[tuple[re.Pattern[str], bool, _Action]] = [
    (re.compile(pattern), "(?P<tok>" in pattern, action) for pattern, action in _RULE_SPECS
]

# Fast path for the overwhelmingly common text: runs of ASCII-letter words, commas and periods,
# each followed by a space, a tab, a newline or the end. No longer rule can start with such a
# word (every longer token class needs a digit, apostrophe, period, hyphen, slash or symbol
# before the space), so each word is a WORD token; a comma followed by a space is always a comma
# token, and a period is one unless ". . ." (an ellipsis) starts there. The assimilations that
# the tokenizer splits ("gonna" -> "gon na") are left to the full rules. A word must be followed
# by an ASCII space (not U+00A0, which a URL token may contain), but a run of spaces is skipped
# whole, U+00A0 included, as the lexer's SPACES rule does.
_FAST_WORD = r"(?!(?i:cannot|gimme|gonna|gotta|lemme|wanna)(?![A-Za-z]))[A-Za-z]+"
_FAST_RUN = re.compile(
    rf"{_SPACE}*(?:(?:{_FAST_WORD}|,|\.(?![ \u00a0]\.))(?=[ \t\n]|\Z){_SPACE}*)*"
)
# Inside a fast line the only punctuation tokens are "," and ".", both dropped at the end.
_FAST_LINE_DROPPED = frozenset({",", "."})


def _tokenize_text(text: str) -> list[list[str]]:
    """Final tokens of each newline-separated line of ``text`` (one Java batch)."""
    result: list[list[str]] = []
    start = 0
    for line in text.split("\n"):
        stop = start + len(line)
        if _FAST_RUN.fullmatch(line):
            result.append([t for t in line.lower().split() if t not in _FAST_LINE_DROPPED])
        else:
            result.append(_finish(_lex(text, start, stop)))
        start = stop + 1
    return result


def _lex(text: str, start: int, stop: int) -> list[str]:
    """Raw PTB tokens (case kept) of ``text[start:stop]``, one line; rules may look past ``stop``."""
    tokens: list[str] = []
    position = start
    while position < stop:
        run = _FAST_RUN.match(text, position, stop)
        if run.end() > position:
            tokens.extend(run.group().split())
            position = run.end()
            if position >= stop:
                break
        best_length = 0
        best: tuple[re.Match[str], bool, _Action] | None = None
        for pattern, has_context, action in _RULES:
            match = pattern.match(text, position)
            if match is not None and match.end() - position > best_length:
                best_length = match.end() - position
                best = (match, has_context, action)
        assert best is not None  # the last rule matches any character
        match, has_context, action = best
        emitted, consumed = action(match.group("tok") if has_context else match.group())
        tokens.extend(emitted)
        position += consumed
    return tokens


def _finish(raw_tokens: list[str]) -> list[str]:
    if not raw_tokens:
        return []
    # Tokens never contain a plain space (the lexer turns inner spaces into U+00A0), so one
    # join/lower/split is the per-token lower-casing of the Java tokenizer, only faster.
    lowered = " ".join(raw_tokens).lower().split(" ")
    return [token for token in lowered if token not in PTB_PUNCTUATION]


def ptb_tokenize(text: str) -> list[str]:
    """Tokens pycocoevalcap's PTBTokenizer keeps for one caption (lower-cased, punctuation dropped).

    >>> ptb_tokenize("A dog can't catch the frisbee (it's red).")
    ['a', 'dog', 'ca', "n't", 'catch', 'the', 'frisbee', '-lrb-', 'it', "'s", 'red', '-rrb-']
    """
    return _tokenize_text(_as_one_line(text))[0]


def ptb_tokenize_lines(lines: Sequence[str]) -> list[list[str]]:
    """Tokenize captions exactly as pycocoevalcap does for one batch: joined by newlines.

    The result has one token list per input caption. Joining matters only for an abbreviation
    at the end of a caption, whose period the Java tokenizer doubles when the next caption
    starts with an upper-case letter.
    """
    if not lines:
        return []
    joined = "\n".join(line.replace("\n", " ") for line in lines)
    return _tokenize_text(_OTHER_LINE_BREAKS.sub(" ", joined))


# pycocoevalcap replaces "\n" inside a caption by a space; the other line breaks the Java lexer
# knows would shift every later caption of the batch, so they become spaces too (documented).
_OTHER_LINE_BREAKS = re.compile("\r\n|[\r\u2028\u2029\x0b\x0c\x85]")


def _as_one_line(text: str) -> str:
    return _OTHER_LINE_BREAKS.sub(" ", text.replace("\n", " "))
