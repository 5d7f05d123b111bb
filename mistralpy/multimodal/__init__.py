"""Images for vision-language models: inputs decoded and checked, preprocessing, hashes, placeholder tokens in the
prompt, and the per-step embeddings the model runner scatters into the input embeddings."""
