import torch

from distill_core.attention import attention_maps_from
from distill_core.models import load_model


def test_maps_only_for_mapped_layers_and_same_function(tiny_teacher_dir):
    fast = load_model(str(tiny_teacher_dir), attn_implementation="sdpa").model
    eager = load_model(str(tiny_teacher_dir), attn_implementation="eager").model
    ids = torch.tensor([[5, 17, 200, 3000, 42, 7], [9, 8, 7, 6, 5, 4]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    reference = eager(input_ids=ids, attention_mask=mask, output_attentions=True)
    with attention_maps_from(fast, [1, 3]):
        out = fast(input_ids=ids, attention_mask=mask, output_attentions=True)
    assert len(out.attentions) == 2  # only the mapped layers materialise their maps
    real = mask.bool()
    assert torch.allclose(out.logits[real], reference.logits[real], atol=1e-4)
    for got, layer in zip(out.attentions, [1, 3]):
        assert got.shape == (2, 4, 6, 6)
        assert torch.allclose(got[0], reference.attentions[layer][0], atol=1e-5)
        assert torch.allclose(got[0].triu(1), torch.zeros(4, 6, 6))  # causal: no attention to the future
    assert fast.config._attn_implementation == "sdpa"  # restored
    assert fast.model.layers[1].self_attn.config is fast.config
