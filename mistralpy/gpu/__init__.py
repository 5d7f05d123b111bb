"""GPU kernels in Triton: fused element-wise layers, paged attention over the engine's block tables, and GGUF
dequantize-matmuls that keep weights in their blocks. Imported only where a CUDA device is used, so a CPU install
never imports Triton; the tests run every kernel through Triton's interpreter (TRITON_INTERPRET=1) on the CPU
against its torch reference."""
