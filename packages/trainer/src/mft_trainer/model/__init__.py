"""The model half of the trainer: build, packed attention, the forward and its per-token losses, PEFT, MoE, save.

    build.build_model(model_cfg, peft_cfg, vocab_size=V, device="cpu")  -> nn.Module (HF model or PeftModel)
    forward.token_losses(model, batch, attn_implementation)              -> (token_loss [B, L] fp32, moe aux or None)
    save.save_pretrained_with_template(model, tokenizer, template, out)  -> out/ (Contract 2)
"""
