"""HumanEval-X in C++, Java, JavaScript, Go and Rust: programs built and run as codefuse-evaluation does, every
compile and run inside the sandbox.

Modules: ``dataset`` (the JSONL files), ``languages`` (per-language source assembly), ``toolchains`` (finding the
compilers, building the shared dependencies once), ``commands`` (build/run steps and limits), ``command_server``
and ``pool`` (the sandboxed workers), ``runner`` (verdicts), ``extract`` and ``prompts`` (``mft-eval run``'s modes).
"""
