"""Specs are validated where they enter, with messages that name the key."""

import pytest

from xlformer import catalog
from xlformer.spec import SpecError, load_spec, parse_spec

BASE = """
name = "t"
[vocab]
set = "lowercase"
[model]
max_seq = 4
d_model = 4
n_head = 2
n_layer = 1
"""


@pytest.mark.parametrize("name", catalog.names())
def test_every_template_loads(name):
    spec = load_spec(catalog.resolve(name))
    assert spec.name == name and spec.description


def test_defaults_follow_gpt2():
    spec = parse_spec(BASE)
    m = spec.model
    assert m.n_positions == m.max_seq == 4
    assert (m.head_size, m.d_ff, m.norm, m.activation, m.causal) == (2, 16, "pre", "gelu", True)
    assert spec.head.tied and spec.vocab.pad == " "


@pytest.mark.parametrize(("change", "message"), [
    (("n_layer = 1", "n_layers = 1"),
     "unknown key 'model.n_layers' (did you mean 'model.n_layer'?)"),
    (("n_layer = 1", 'n_layer = "one"'), "'model.n_layer' must be int"),
    (("n_layer = 1", "n_layer = true"), "'model.n_layer' must be int"),
    (("n_layer = 1", "n_layer = -1"), "model.n_layer must be 0 or more, not -1"),
    (("max_seq = 4", "max_seq = 0"), "model.max_seq must be positive, not 0"),
    (("n_head = 2", "n_head = 2\nhead_size = -2"), "model.head_size must be positive, not -2"),
    (("n_head = 2", "n_head = 2\nd_ff = 0"), "model.d_ff must be positive, not 0"),
    (("n_head = 2", "n_head = 2\nln_eps = nan"), "model.ln_eps must be a positive number, not nan"),
    (("n_head = 2", "n_head = 2\nln_eps = -1e-5"), "model.ln_eps must be a positive number"),
    (("[model]", "[weights]\nstd = inf\n[model]"), "weights.std must be a finite number >= 0"),
    (("[model]", "[weights]\nsource = 'task'\n[model]"), "weights.source = 'task' needs"),
    (('set = "lowercase"', "tokens = []"), "vocab.tokens is empty; give at least one token"),
    (('name = "t"', 'name = "../../etc/t"'), "name '../../etc/t' must be 1 to 64 letters"),
    (('name = "t"', 'name = "two words"'), "name 'two words' must be 1 to 64 letters"),
    (('name = "t"', 'name = ""'), "name '' must be 1 to 64 letters"),
    (('name = "t"', "name = 3"), "'name' must be str, not 3"),
    (("max_seq = 4\n", ""), "model lacks 'model.max_seq'"),
    (('name = "t"', 'name = "t"\ndescription = "a\\u0001b"'),
     "description has control characters: ['\\x01']"),
    (("d_model = 4", "d_model = 5"), "model.d_model must be a multiple of model.n_head"),
    (('set = "lowercase"', 'set = "klingon"'), "vocab.set must be one of"),
    (('set = "lowercase"', 'tokens = ["a", "b", "a"]'), "vocab.tokens has duplicates: ['a']"),
    (('set = "lowercase"', 'tokens = ["a", ""]'), "vocab.tokens must be single characters"),
    (('set = "lowercase"', 'set = "digits"\npad = "x"'), "vocab.pad 'x' is not one of"),
    (("max_seq = 4", "max_seq = 4\npositions = \"binary\""), "model.binary_codes must give"),
    (("n_head = 2", "n_head = 2\nnorm = \"layer\""), "model.norm must be one of pre, post, none"),
    (("max_seq = 4", "max_seq = 4\nn_positions = 3"),
     "model.n_positions (3) must be at least model.max_seq (4)"),
    (("max_seq = 4", "max_seq = 4\nn_positions = 8\npositions = \"sinusoidal\""),
     "model.n_positions (rows of the position table wpe) is only for positions = 'learned'"),
    (("max_seq = 4", "max_seq = 4\nn_positions = 8.5"), "'model.n_positions' must be int"),
    (("[model]", "text = \"ab\"\n[model]"), "unknown key 'vocab.text'"),
    (("name = \"t\"", "name = \"t\"\ntext = \"abcde\""), "more than max_seq (4)"),
    (("name = \"t\"", "name = \"t\"\ntext = \"aB\""), "'B' at 1"),
    (("[model]", "[model"), "not valid TOML"),
    (('set = "lowercase"', 'tokens = ["a", "\\u0007"]'), "vocab.tokens has control characters"),
])
def test_bad_specs_name_the_problem(change, message):
    with pytest.raises(SpecError) as err:
        parse_spec(BASE.replace(*change))
    assert message in str(err.value)


def test_resolve_rejects_unknown_names_and_lists_templates():
    with pytest.raises(SpecError, match="templates: .*reverse"):
        catalog.resolve("no-such-model")


IDS = """
name = "t"
ids = [3, 0, 4]
[vocab]
input = "ids"
tokens = ["the", " cat", "s", "=1", "ing"]
[model]
max_seq = 4
d_model = 4
n_head = 2
n_layer = 1
"""


def test_a_spec_that_reads_ids_takes_multi_character_tokens_and_default_ids():
    spec = parse_spec(IDS)
    assert spec.reads_ids and spec.input == (3, 0, 4) and spec.vocab.sep == ""
    assert spec.vocab.tokens[1] == " cat" and spec.vocab.pad == "the"
    sized = parse_spec(IDS.replace('tokens = ["the", " cat", "s", "=1", "ing"]', "size = 7"))
    assert sized.vocab.tokens == tuple("0123456") and sized.vocab.sep == " "
    assert parse_spec(IDS.replace("ids = [3, 0, 4]\n", "")).input == ()
    assert parse_spec(BASE).input == "" and not parse_spec(BASE).reads_ids


@pytest.mark.parametrize(("change", "message"), [
    (("ids = [3, 0, 4]", "ids = [3, 0, 5]"), "input has token ids outside 0..4: 5 at 2"),
    (("ids = [3, 0, 4]", "ids = [-1]"), "input has token ids outside 0..4: -1 at 0"),
    (("ids = [3, 0, 4]", "ids = [1, 1, 1, 1, 1]"), "input has 5 token ids, more than max_seq (4)"),
    (("ids = [3, 0, 4]", "ids = [1.5]"), "'ids' must be whole numbers (token ids), not 1.5"),
    (("ids = [3, 0, 4]", "ids = [true]"), "'ids' must be whole numbers (token ids), not True"),
    (("ids = [3, 0, 4]", 'ids = "3 0"'), "'ids' must be list"),
    (("ids = [3, 0, 4]", 'text = "ab"'), "takes 'ids' (a list of token ids), not 'text'"),
    (('input = "ids"', 'input = "bytes"'), "vocab.input must be one of text, ids, not 'bytes'"),
    (('"ing"]', '""]'), "vocab.tokens must be non-empty strings, not ''"),
    (('"ing"]', '"the"]'), "vocab.tokens has duplicates: ['the']"),
    (('"ing"]', '"a\\nb"]'), "vocab.tokens has control characters: ['a\\nb']"),
    (('"ing"]', '3]'), "vocab.tokens must be non-empty strings, not 3"),
    (('tokens = ["the", " cat", "s", "=1", "ing"]', "size = 0"), "vocab.size must be positive"),
    (('tokens = ["the", " cat", "s", "=1", "ing"]', 'size = 5\nset = "digits"'),
     "vocab needs exactly one of 'vocab.set', 'vocab.tokens', 'vocab.size' or 'vocab.bpe'"),
    (('tokens = ["the", " cat", "s", "=1", "ing"]', 'bpe = "none.json"'),
     "vocab.bpe: vocabulary none.json is not a readable JSON file"),
    (('tokens = ["the", " cat", "s", "=1", "ing"]', 'tokens = ["a"]\nmerges = "m.txt"'),
     "vocab.merges (a BPE's merges.txt) needs vocab.bpe (its vocab.json)"),
    (('input = "ids"\ntokens = ["the", " cat", "s", "=1", "ing"]', 'bpe = "v.json"'),
     "vocab.bpe (a BPE vocabulary) needs vocab.input = \"ids\""),
    (('input = "ids"\n', ""), "vocab.tokens must be single characters, not 'the' "
     "(multi-character tokens need vocab.input = \"ids\")"),
    (('input = "ids"\ntokens = ["the", " cat", "s", "=1", "ing"]', "size = 5"),
     "vocab.size (tokens named by their ids) needs vocab.input = \"ids\""),
    (("n_layer = 1", "n_layer = 1\n[generate]\nsteps = 2"),
     "vocab.input = \"ids\" does not work with [generate] or encoder-decoders yet"),
])
def test_bad_ids_specs_name_the_problem(change, message):
    with pytest.raises(SpecError) as err:
        parse_spec(IDS.replace(*change))
    assert message in str(err.value)


def test_a_text_spec_takes_no_ids_and_its_target_vocab_no_input():
    with pytest.raises(SpecError, match="'ids' is for vocab.input"):
        parse_spec(BASE.replace('name = "t"', 'name = "t"\nids = [1]'))
    with pytest.raises(SpecError, match="unknown key 'target_vocab.input'"):
        parse_spec(BASE + '[target_vocab]\nset = "digits"\ninput = "ids"\n')
