"""The served repository: text in, answers out, on the backend the cluster runs.

    layout             names and paths of the served repository (the one place they are fixed)
    configs            one renderer per config kind: ensemble, tokenizer step, answer step
                       (the model step is `triton_config.render_triton_config`)
    artifact           what the builder writes: configs, model.onnx, tokenizer files, step facts
    tokenize_model     the tokenizer step (python backend): pads each length group for batching
    postprocess_model  the answer step (python backend): normalized embeddings, label + score

The builder writes it, the operator copies it into the Triton pod (its ConfigMap holds the
same configs) and `optimodel serve` runs it locally; see operator/OPERATOR.md, "Text in".
"""
