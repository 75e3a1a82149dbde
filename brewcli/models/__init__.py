"""The model side of brew: `hf` loads Hugging Face configs, weights and tokenizers and builds models for a task,
`families` knows each family's widths, resizing and layer names, `students` turns a preset and a teacher into a
student config and copies teacher layers into it, `features` is the vocabulary of what a loss term reads from a
model (kinds keyed by layer), and `hooks` reads the query/key/value kinds from the projections."""
