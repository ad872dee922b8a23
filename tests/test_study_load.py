"""Strict study loading: the default study, and one clear line per bad input."""

import pytest

from orca_analysis.errors import StudyError
from orca_analysis.study import load_study

TINY = open(__file__.replace("test_study_load.py", "fixtures/tiny.yaml")).read()


def problems(path) -> list[str]:
    with pytest.raises(StudyError) as exc:
        load_study(str(path))
    return exc.value.problems


def test_default_study_is_the_design_notes_orca():
    study = load_study("orca")
    assert study.base.wrapper == {"num_tokens": 20000, "max_seq_len": 8192, "use_abs_pos_emb": False}
    assert study.base.layers == {
        "dim": 512,
        "depth": 6,
        "heads": 8,
        "alibi_pos_bias": True,
        "alibi_num_heads": 4,
        "rotary_xpos": True,
        "attn_flash": True,
        "deepnorm": True,
        "shift_tokens": 1,
        "attn_one_kv_head": True,
    }
    ids = [v.variant_id for v in study.variants()]
    # one_at_a_time around the base: base + 2 new values per axis (the base value is not repeated)
    assert ids == ["base", "dim=256", "dim=1024", "depth=3", "depth=12", "heads=4", "heads=16"]


def test_grid_mode_crosses_axes(write_study):
    path = write_study(TINY.replace("mode: one_at_a_time", "mode: grid"))
    ids = [v.variant_id for v in load_study(str(path)).variants()]
    # 2 dims x 3 depths = 6 combinations; (dim=64, depth=2) is the base itself
    assert len(ids) == 6 and ids[0] == "base" and "dim=32,depth=3" in ids


def test_overrides_apply_to_base(tiny_study_path):
    study = load_study(str(tiny_study_path), ["depth=5", "attn_layers.heads=8", "ff_glu=true"])
    assert (study.base.depth, study.base.heads, study.base.layers["ff_glu"]) == (5, 8, True)


def test_unknown_key_suggests_the_right_one(write_study):
    (line,) = problems(write_study(TINY.replace("    heads: 4", "    haeds: 4")))
    assert "line 11" in line and "unknown key 'attn_layers.haeds'" in line and "did you mean 'heads'" in line


def test_unknown_top_level_key(write_study):
    (line,) = problems(write_study(TINY + "sweeps: {}\n"))
    assert "unknown key 'sweeps'" in line and "did you mean 'sweep'" in line


def test_wrong_type(write_study):
    (line,) = problems(write_study(TINY.replace("depth: 2\n", "depth: two\n")))
    assert "'depth' must be an integer, got 'two'" in line and "line 10" in line


@pytest.mark.parametrize(
    "old,new,expected",
    [
        ("    depth: 2\n", "    depth: 0\n", "'depth' must be at least 1, got 0"),
        ("    heads: 4\n", "    heads: 0\n", "'heads' must be at least 1, got 0"),
        ("alibi_num_heads: 2", "alibi_num_heads: 8", "'alibi_num_heads' (8) cannot exceed 'heads' (4)"),
        (
            "attn_one_kv_head: true",
            "attn_kv_heads: 3",
            "'heads' (4) must be divisible by the number of kv heads (3)",
        ),
        ("seq_lens: [32, 64]", "seq_lens: [32, 256]", "sequence length 256 exceeds max_seq_len 128"),
        ("dim: [32, 64]", "dim: []", "sweep axis 'dim' is empty"),
        ("dtype: float32", "dtype: float33", "did you mean 'float32'"),
        (
            "measurements: [params]",
            "measurements: [parms]",
            "unknown measurement 'parms'; did you mean 'params'",
        ),
    ],
)
def test_impossible_values(write_study, old, new, expected):
    found = problems(write_study(TINY.replace(old, new)))
    assert any(expected in p for p in found), found


def test_sweep_value_that_breaks_a_variant_names_the_variant(write_study):
    text = TINY.replace("depth: [1, 2, 3]", "heads: [1, 4]")
    found = problems(write_study(text))
    assert any(
        "variant 'heads=1'" in p and "'alibi_num_heads' (2) cannot exceed 'heads' (1)" in p for p in found
    )


def test_malformed_yaml_gives_line_number(write_study):
    (line,) = problems(write_study(TINY.replace("    dim: 64\n", "    dim: [64\n")))
    assert "malformed YAML" in line and "line 10" in line


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(StudyError, match="study file not found"):
        load_study(str(tmp_path / "nope.yaml"))
    with pytest.raises(StudyError, match="did you mean 'orca'"):
        load_study("orka")


def test_bad_override_names_the_flag(tiny_study_path):
    with pytest.raises(StudyError) as exc:
        load_study(str(tiny_study_path), ["attn_flsh=true"])
    assert exc.value.problems == [
        "--set attn_flsh=true: unknown key 'attn_flsh'; did you mean 'attn_flash'? "
        f"(not a keyword of the installed x-transformers {_xt()})"
    ]


def test_an_impossible_shape_made_by_an_override_names_the_override(tiny_study_path):
    """The file's base is fine (4 heads over 1 KV head); --set attn_one_kv_head=false --set attn_kv_heads=3 makes
    4 heads over 3: the problem names the flags, not the file's 'heads' line."""
    with pytest.raises(StudyError) as exc:
        load_study(str(tiny_study_path), ["attn_one_kv_head=false", "attn_kv_heads=3"])
    assert exc.value.problems == [
        "--set attn_one_kv_head=false --set attn_kv_heads=3: 'heads' (4) must be "
        "divisible by the number of kv heads (3)"
    ]


def test_the_files_own_problem_is_not_blamed_on_an_override(write_study, tiny_study_path):
    path = write_study(tiny_study_path.read_text().replace("seq_lens: [32, 64]", "seq_lens: [32, 256]"))
    with pytest.raises(StudyError) as exc:
        load_study(str(path), ["depth=1"])
    assert (
        exc.value.problems[0].startswith(f"{path}: line ")
        and "sequence length 256 exceeds" in exc.value.problems[0]
    )


def test_every_problem_is_reported_at_once(write_study):
    text = TINY.replace("    heads: 4", "    haeds: 4").replace("dtype: float32", "dtype: 7")
    assert len(problems(write_study(text))) == 2


def _xt():
    from importlib.metadata import version

    return version("x-transformers")


def test_the_base_variant_is_named_once_and_the_variants_computed_once():
    """The base is the first variant, id BASE_ID; `variants()` is computed once per study and handed out as a
    new list each time (a caller changing its list changes no other's)."""
    from orca_analysis.study.schema import BASE_ID

    study = load_study("orca")
    first = study.variants()
    assert study.base_variant is first[0] and first[0].variant_id == BASE_ID
    assert study.is_base(first[0]) and not any(study.is_base(v) for v in first[1:])
    assert not any(study.is_base(v) for v in study.remedy_variants())  # a fix of the base is not the base
    first.pop()
    again = study.variants()
    assert len(again) == len(first) + 1 and all(a is b for a, b in zip(again[:-1], first, strict=True))
