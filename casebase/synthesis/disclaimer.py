"""The sentence every rendering of a brief carries, in one place (text, Markdown, HTML)."""

DISCLAIMER = (
    "Decision support, not a diagnosis: these counts describe what was reported "
    "for visually similar past cases, not what this image shows."
)
