"""Texts of mixed lengths for the embedding tests (one word to ~200 tokens, punctuation, accents, digits)."""

TEXTS = [
    "Hello world",
    "a",
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings map sentences to vectors whose cosine similarity reflects meaning.",
    "Café crème, naïve résumé — déjà vu!",
    "1234567890 and 3.14159 are numbers; so is 2e10.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France. " * 6,
    "Sentence encoders are trained with contrastive objectives on paired data.",
    "short",
    "A man is playing a guitar.",
    "A woman is slicing an onion in the kitchen while listening to the radio.",
    "def add(a, b):\n    return a + b",
    "The weather today is sunny with a light breeze from the west.",
    " ".join(f"word{i}" for i in range(60)),
    "Is this the real life? Is this just fantasy?",
    "Machine learning models running on a CPU can still be fast with good batching. " * 4,
    "ok",
    "The mitochondria is the powerhouse of the cell.",
    "Transformers use attention to mix information across tokens.",
]
