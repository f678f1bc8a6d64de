import copy

import pytest

from cmr_lib.core.config import Config, make_config
from cmr_lib.core.sections import PreprocessConfig
from cmr_lib.core.errors import CmrError
from cmr_lib.core.schema import PROFILES, load_profile, load_settings


def test_defaults_run_as_is():
    cfg = make_config()
    assert (cfg.profile, cfg.setting, cfg.stylizer, cfg.seed, cfg.data_dir) == ("demo", 0, "none", 0, None)
    assert cfg.crop == cfg.sizes.preprocess.crop.none
    assert "no stylization" in cfg.summary()


@pytest.mark.parametrize("name", PROFILES)
def test_profiles_have_the_same_keys(name):
    _, sizes = load_profile(name)
    _, demo = load_profile("demo")

    def keys(d, p=""):
        return {p + k for k in d} | {x for k, v in d.items() if isinstance(v, dict) for x in keys(v, p + k + ".")}
    assert keys(sizes) == keys(demo)


def test_paper_profile_keeps_the_papers_crops():
    sizes = make_config(profile="paper", setting=2, stylizer="adaconv").sizes
    assert sizes.preprocess.crop.rain == 224 and sizes.preprocess.crop.adaconv == 256
    assert make_config(profile="paper", setting=2, stylizer="adaconv").crop == 256


@pytest.mark.parametrize("kwargs, message", [
    ({"setting": 7}, "parameter 'setting' = 7: choose one of 0, 1, 2, 3"),
    ({"profile": "fast"}, "parameter 'profile' = 'fast': choose one of 'smoke', 'demo', 'demo-long', 'real', 'real-ref', 'paper'"),
    ({"data_dir": "/no/such/folder"}, "parameter 'data_dir' = '/no/such/folder': no such folder"),
    ({"setting": 2, "stylizer": "none"}, "parameter 'stylizer' = 'none': setting 2 stylizes"),
    ({"stylizer": "cyclegan"}, "parameter 'stylizer' = 'cyclegan': choose one of"),
    ({"seed": -1}, "parameter 'seed' = -1: must be >= 0"),
    ({"seed": 1.5}, "parameter 'seed' = 1.5: must be an integer"),
    ({"setting": True}, "parameter 'setting' = True: must be an integer"),
    ({"c0_spacing": "guess"}, "parameter 'c0_spacing' = 'guess': choose one of 'header', 'lge'"),
    ({"notes": object()}, "parameter 'notes': unknown"),
])
def test_bad_parameters_are_one_line_errors(kwargs, message):
    with pytest.raises(CmrError) as err:
        make_config(**kwargs)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_papermill_strings_are_accepted_for_integers():
    assert make_config(setting="3", stylizer="rain").setting == 3


def test_setting_zero_has_no_stylizer():
    assert make_config(setting=0, stylizer="adaconv").stylizer == "none"


def test_profile_from_a_yaml_file_and_its_errors(tmp_path):
    text = (load_profile("smoke")[1])
    import yaml
    good = tmp_path / "mine.yaml"
    text = dict(text, profile="mine")
    good.write_text(yaml.safe_dump(text))
    assert make_config(profile=str(good)).profile == "mine"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(dict(text, preprocess=dict(text["preprocess"], crop={"rain": -1, "adaconv": 8, "none": 8}))))
    with pytest.raises(CmrError, match=r"bad.yaml: parameter 'preprocess.crop.rain' = -1: must be >= 1"):
        make_config(profile=str(bad))
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump(dict(text, epochs=3)))
    with pytest.raises(CmrError, match="unknown key 'epochs'"):
        make_config(profile=str(extra))
    broken = tmp_path / "broken.yaml"
    broken.write_text("profile: [unclosed")
    with pytest.raises(CmrError, match="not valid YAML"):
        make_config(profile=str(broken))


def test_settings_are_table_1():
    s = load_settings()
    assert sorted(s) == [0, 1, 2, 3]
    assert not s[0]["stylize"]
    assert s[1]["pretrain"] == {"content": "C0", "style": "T2"}
    assert s[2]["pretrain"] == s[3]["pretrain"] == {"content": "C0", "style": "LGE"}
    assert [s[k]["style_pairing"] for k in (1, 2, 3)] == ["random", "random", "same_patient_level"]
    assert all(s[k]["style_sequence"] == "LGE" for k in (1, 2, 3))


def test_config_is_immutable_and_serialisable(tmp_path):
    cfg = make_config(output_root=tmp_path, real_data_dir=str(tmp_path))
    with pytest.raises(AttributeError):
        cfg.seed = 3
    d = cfg.to_dict()
    assert d["extra"] == {"real_data_dir": str(tmp_path)} and d["output_root"] == str(tmp_path.resolve())
    assert make_config().to_dict()["output_root"] == "."          # repository paths are recorded relative
    assert cfg.figures_dir == tmp_path.resolve() / "figures"
    assert isinstance(cfg.sizes.preprocess, PreprocessConfig) and cfg.sizes.preprocess.to_dict()["crop"]["rain"] == 64


def test_notebook_readers_see_one_line_not_a_traceback(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    result = shell.run_cell("from cmr_lib.core.config import make_config\nmake_config(setting=9)")
    assert not result.success
    out = capsys.readouterr()
    text = (out.out + out.err).strip()
    assert text == "CmrError: parameter 'setting' = 9: choose one of 0, 1, 2, 3"


def test_config_pickles_and_copies():
    import copy
    import pickle

    cfg = make_config(profile="smoke")
    for clone in (pickle.loads(pickle.dumps(cfg)), copy.deepcopy(cfg)):
        assert clone.to_dict() == cfg.to_dict() and clone.sizes.preprocess.crop.rain == 64
    with pytest.raises(AttributeError):
        cfg.sizes.no_such_key


def test_overrides_set_validated_profile_values():
    cfg = make_config(profile="smoke", overrides={"stylizer.adaconv.kernel_size": 5, "preprocess.crop.rain": 96})
    assert cfg.sizes.stylizer.adaconv.kernel_size == 5 and cfg.sizes.preprocess.crop.rain == 96
    with pytest.raises(CmrError, match="kernel_size' = 4: must be odd"):
        make_config(profile="smoke", overrides={"stylizer.adaconv.kernel_size": 4})
    with pytest.raises(CmrError, match="no such profile"):
        make_config(profile="smoke", overrides={"stylizer.adaconv.kernel": 5})
    with pytest.raises(CmrError, match="must be a mapping"):
        make_config(profile="smoke", overrides=[1])


def test_a_config_comes_back_from_its_run_record(tmp_path):
    cfg = make_config(profile="smoke", setting=3, stylizer="rain+intensity", seed=2, output_root=tmp_path,
                      overrides={"segmenter.iterations": 7}, t2_dir=str(tmp_path), test_patients=[3])
    record = {"config": {k: v for k, v in cfg.to_dict().items() if k != "output_root"}}
    back = Config.from_record(record, output_root=tmp_path)
    assert back == cfg                                   # sizes as recorded, not as the profile file says now
    assert back.sizes.segmenter.iterations == 7 and back.extra["t2_dir"] == str(tmp_path) and back.split["test"] == [3]
    older = copy.deepcopy(record)                        # a record from before the test-crop keys existed
    for key in ("normalise_fov_mm", "test_crop"):
        del older["config"]["sizes"]["preprocess"][key]
    old = Config.from_record(older, output_root=tmp_path)
    assert old.sizes.preprocess.test_crop == "image" and old.sizes.preprocess.normalise_fov_mm is None
    assert "test_crop" not in older["config"]["sizes"]["preprocess"]       # the record itself is left alone
    record["config"]["sizes"]["segmenter"]["iterations"] = 0
    with pytest.raises(CmrError, match="segmenter.iterations"):
        Config.from_record(record)


def test_a_smoke_run_says_at_its_top_that_its_numbers_are_not_results():
    """Issue 36: every notebook prints cfg.summary() first; under smoke it carries a one-line warning."""
    from cmr_lib.core.config import SMOKE_WARNING, make_config
    smoke, demo = make_config(profile="smoke").summary(), make_config(profile="demo").summary()
    assert smoke.splitlines()[-1] == SMOKE_WARNING and "not results" in SMOKE_WARNING
    assert SMOKE_WARNING not in demo


def test_profiles_are_deltas_of_the_default_and_extends_resolves_names_paths_and_cycles(tmp_path):
    """Issue 37: every profile but demo says `extends:` and only what differs (under 30 lines); a profile of one's
    own may extend a name or a path beside it; a cycle, an unknown base and a bad key are one-line errors."""
    from cmr_lib.core.errors import CmrError
    from cmr_lib.core.paths import repo_root
    from cmr_lib.core.schema import PROFILES, load_profile
    for name in PROFILES:
        text = (repo_root() / "params" / f"{name}.yaml").read_text()
        if name != "demo":
            assert "\nextends: " in text and len(text.splitlines()) < 30, name
    demo = load_profile("demo")[1]
    (tmp_path / "a.yaml").write_text("profile: a\nextends: demo\nsegmenter: {iterations: 7}\n")
    (tmp_path / "b.yaml").write_text("profile: b\nextends: a.yaml\nsegmenter: {root: 4}\n")
    name, tree = load_profile(str(tmp_path / "b.yaml"))
    assert name == "b" and tree["segmenter"]["iterations"] == 7 and tree["segmenter"]["root"] == 4
    assert tree["stylizer"] == demo["stylizer"] and tree["segmenter"]["depth"] == demo["segmenter"]["depth"]
    (tmp_path / "c.yaml").write_text("profile: c\nextends: d.yaml\n")
    (tmp_path / "d.yaml").write_text("profile: d\nextends: c.yaml\n")
    with pytest.raises(CmrError, match="a cycle"):
        load_profile(str(tmp_path / "c.yaml"))
    (tmp_path / "e.yaml").write_text("profile: e\nextends: nowhere\n")
    with pytest.raises(CmrError, match="e.yaml: extends.*choose one of"):
        load_profile(str(tmp_path / "e.yaml"))
    (tmp_path / "f.yaml").write_text("profile: f\nextends: demo\nsegmenter: {roots: 4}\n")
    with pytest.raises(CmrError, match=r"f.yaml: unknown key 'segmenter.roots'"):
        load_profile(str(tmp_path / "f.yaml"))


def test_typed_sections_are_the_one_default_and_derive_schema_records_and_reference(tmp_path):
    """Issue 37: each parameter is one typed field (default, unit, meaning, validator); the validator tree, the values
    older records lacked and docs/parameters.md are derived from the fields; demo.yaml gives only its name."""
    import dataclasses
    import yaml
    from cmr_lib.core import sections
    from cmr_lib.core.paths import repo_root
    from cmr_lib.core.schema import PROFILE_SCHEMA, RECORD_DEFAULTS

    def leaves(cls):
        for f in dataclasses.fields(cls):
            if "section" in f.metadata:
                yield from leaves(f.metadata["section"])
            else:
                yield f
    fields = list(leaves(sections.Profile))
    assert len(fields) > 60 and all(callable(f.metadata["check"]) and f.metadata["meaning"] for f in fields)
    assert PROFILE_SCHEMA["segmenter"]["select"] is next(f for f in fields if f.name == "select").metadata["check"]
    assert RECORD_DEFAULTS["segmenter.select"] == "target" and RECORD_DEFAULTS["stylizer.rain.skips"] is False
    assert load_profile("demo")[1] == sections.defaults()
    assert set(yaml.safe_load((repo_root() / "params" / "demo.yaml").read_text())) == {"profile"}
    assert (repo_root() / "docs" / "parameters.md").read_text() == sections.reference(
        {p: load_profile(p)[1] for p in PROFILES}), "docs/parameters.md is stale: python -m cmr_lib.core.schema"
    cfg = make_config(profile="real", setting=1, stylizer="rain")
    sg = cfg.sizes.segmenter
    assert isinstance(sg, sections.SegmenterConfig) and sg.batch == sg["batch"] == 8
    assert sg == sg.to_dict() and cfg.sizes == load_profile("real")[1] and sg != {**sg.to_dict(), "batch": 9}
    assert cfg.sizes.stylizer.rain.skips is True and dict(cfg.sizes.baselines["gin"])["layers"] == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        sg.batch = 3
    (tmp_path / "anon.yaml").write_text("extends: demo\nsegmenter: {iterations: 7}\n")
    with pytest.raises(CmrError, match=r"anon.yaml: missing key 'profile'"):
        load_profile(str(tmp_path / "anon.yaml"))
    (tmp_path / "bare.yaml").write_text("profile: bare\nsegmenter: {lr: 0}\n")
    with pytest.raises(CmrError, match=r"bare.yaml: parameter 'segmenter.lr' = 0.0: must be > 0.0"):
        load_profile(str(tmp_path / "bare.yaml"))


def test_a_quiet_parameter_at_its_old_value_leaves_checkpoint_identities_alone():
    """A field added with quiet=True is out of Params.identity() while it holds `before` (no network is renamed by
    adding it) and in it once set; to_dict() always has it."""
    import dataclasses

    from cmr_lib.core import sections
    from cmr_lib.core.sections import RainConfig, StylizerConfig
    plain = RainConfig()
    assert "adversarial_weight" in plain.to_dict() and "adversarial_weight" not in plain.identity()
    assert plain.identity() == {k: v for k, v in plain.to_dict().items() if k != "adversarial_weight"}
    assert dataclasses.replace(plain, adversarial_weight=0.5).identity()["adversarial_weight"] == 0.5
    nested = StylizerConfig().identity()
    assert "adversarial_weight" not in nested["rain"] and nested["rain"]["skips"] is False   # non-quiet fields stay
    with pytest.raises(ValueError, match="before"):
        sections.param(0.0, None, "x", quiet=True)
