from weightscope.comparison import match_layers, normalize_name


def test_normalize_strips_wrapper_prefixes_repeatedly():
    assert normalize_name("model.model.layers.0.self_attn.q_proj") == "layers.0.self_attn.q_proj"
    assert normalize_name("module._orig_mod.fc") == "fc"
    assert normalize_name("base_model.model.model.layers.0.q_proj.base_layer") == "layers.0.q_proj"
    assert normalize_name("model") == "model"  # never strips a name to nothing


def test_lightning_prefixes_pair_with_plain_names_and_mapping_is_reported():
    names1 = ["model.model.embed_tokens", "model.model.layers.0.mlp.up_proj", "model.lm_head"]
    names2 = ["model.embed_tokens", "model.layers.0.mlp.up_proj", "lm_head"]
    m = match_layers(names1, names2)
    assert m.pairs == list(zip(names1, names2))
    assert m.mapping == dict(zip(names1, names2))
    assert m.only_in_model1 == m.only_in_model2 == []


def test_module_and_orig_mod_prefixes(gen=None):
    m = match_layers(["module.fc1", "module.fc2", "extra"], ["_orig_mod.fc2", "_orig_mod.fc1", "fc3"])
    assert sorted(m.pairs) == [("module.fc1", "_orig_mod.fc1"), ("module.fc2", "_orig_mod.fc2")]
    assert m.only_in_model1 == ["extra"] and m.only_in_model2 == ["fc3"]


def test_exact_names_win_and_ambiguous_stripped_names_are_not_paired():
    m = match_layers(["x", "model.x"], ["x"])
    assert m.pairs == [("x", "x")] and m.mapping == {}
    assert m.only_in_model1 == ["model.x"]
    amb = match_layers(["model.a", "module.a"], ["a"])
    assert amb.pairs == []
    assert amb.only_in_model1 == ["model.a", "module.a"] and amb.only_in_model2 == ["a"]


def test_tied_alias_pairs_with_a_real_tensor_on_the_other_side():
    m = match_layers(["wte", "h.0"], ["wte", "h.0", "lm_head"], aliases1={"lm_head": "wte"})
    assert m.pairs == [("wte", "wte"), ("h.0", "h.0"), ("lm_head", "lm_head")] and m.mapping == {}
    assert m.only_in_model1 == m.only_in_model2 == []
    # Spelled differently on each side (a Lightning side tied, an HF side untied): (model-1 name, model-2 name).
    m = match_layers(["model.wte", "model.h.0"], ["wte", "h.0", "lm_head"], aliases1={"model.lm_head": "model.wte"})
    assert m.pairs == [("model.wte", "wte"), ("model.h.0", "h.0"), ("model.lm_head", "lm_head")]
    assert m.mapping == {"model.wte": "wte", "model.h.0": "h.0", "model.lm_head": "lm_head"}
    assert m.only_in_model1 == m.only_in_model2 == []
    # And the other way round: the model-2 side holds only the alias.
    m = match_layers(["wte", "h.0", "lm_head"], ["model.wte", "model.h.0"], aliases2={"model.lm_head": "model.wte"})
    assert m.pairs == [("wte", "model.wte"), ("h.0", "model.h.0"), ("lm_head", "model.lm_head")]
    assert m.only_in_model1 == m.only_in_model2 == []
    # Tied on both sides: the alias is not compared twice.
    both = match_layers(["wte"], ["wte"], aliases1={"lm_head": "wte"}, aliases2={"lm_head": "wte"})
    assert both.pairs == [("wte", "wte")]
    # Tied on one side, absent on the other (HF saves drop tied copies): not 'only in'.
    absent = match_layers(["wte"], ["wte"], aliases1={"lm_head": "wte"})
    assert absent.only_in_model1 == [] and absent.pairs == [("wte", "wte")]


def test_only_in_lists_are_sorted():
    m = match_layers(["c", "a", "b"], ["z", "y"])
    assert m.only_in_model1 == ["a", "b", "c"] and m.only_in_model2 == ["y", "z"]
