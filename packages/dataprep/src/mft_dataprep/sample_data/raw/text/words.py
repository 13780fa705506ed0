"""Word utilities."""


def title_case(text: str) -> str:
    return " ".join(w.capitalize() for w in text.split())
