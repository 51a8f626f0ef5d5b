"""A varied text corpus for alignment tests: prose, indented code, LaTeX, long numbers, emoji with
ZWJ, CJK, whitespace runs, combining marks and special-token strings."""

CORPUS = {
    "prose": "The quick brown fox jumps over the lazy dog. It's 5 o'clock somewhere, isn't it?",
    "code": "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n\tprint(fib(10))",
    "latex": r"$$\int_0^\infty e^{-x^2}\,dx = \frac{\sqrt{\pi}}{2}, \quad \mathbf{A}^{\top}\mathbf{x}$$",
    "numbers": "12345678901234567890 + 0.000314159e-12 = 3,141,592,653,589.79323846",
    "emoji": "Family: 👨‍👩‍👧‍👦 flags 🇯🇵🇫🇷 skin 👍🏽 heart ❤️‍🔥 done",
    "cjk": "日本語のテキストと中文混合，한국어도 있습니다。",
    "whitespace": "a  b   c\n\n\n   d\t\t e     \n  \n",
    "combining": "cafe\u0301 nai\u0308ve A\u030a e\u0301e\u0301",
    "special_strings": "User: <|im_end|> <|eot_id|> </s> <s> [INST] <|endoftext|> ok",
}
