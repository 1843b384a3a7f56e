import pytest
from keras_bert_lite.training.optimizer import WarmupLinearDecay, bert_optimizer


def test_warmup_then_linear_decay_to_zero():
    schedule = WarmupLinearDecay(1e-3, warmup_steps=10, total_steps=110)
    assert float(schedule(0)) == pytest.approx(1e-4)
    assert float(schedule(9)) == pytest.approx(1e-3)
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(60)) == pytest.approx(5e-4)
    assert float(schedule(110)) == pytest.approx(0.0)
    assert float(schedule(500)) == pytest.approx(0.0)


def test_weight_decay_skips_layer_norm_and_biases():
    from keras_bert_lite.models import BertBackbone

    backbone = BertBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16
    )
    optimizer = bert_optimizer(1e-3, total_steps=10)
    decayed = {
        v.path for v in backbone.trainable_variables if optimizer._use_weight_decay(v)
    }
    assert "encoder_0/qkv/kernel" in decayed
    assert "embeddings/token_embedding/embeddings" in decayed
    assert not any(p.endswith(("bias", "gamma", "beta")) for p in decayed)
