"""edgevl for photo folders: index a folder tree into SQLite + a vector index, search it by text or example,
and browse it in a local web page (`edgevl index`, `edgevl search`, `edgevl serve`; docs/app.md).

Built only on edgevl's public API (`create_model_and_transforms`, `optimize_for_inference`, `get_tokenizer`,
`caption`), so it doubles as an example of embedding edgevl in a program.
"""
