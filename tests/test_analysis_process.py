"""The finite-state teacher: exact tables, grammar of its texts, determinism, transitions off its support."""

import numpy as np
import pytest

from harness.analysis.process import CONNECTOR_WEIGHTS, CONNECTORS, EOS, ROLES, TOKEN_ID, VOCAB, FiniteStateTeacher


@pytest.fixture(scope="module")
def process() -> FiniteStateTeacher:
    return FiniteStateTeacher()


def test_tables_are_distributions_and_transitions_are_closed(process):
    assert 100 <= process.num_states <= 5000
    assert (process.teacher >= 0).all()
    np.testing.assert_allclose(process.teacher.sum(axis=1), 1.0, atol=1e-12)
    assert (process.next_state >= 0).all() and (process.next_state < process.num_states).all()
    assert (process.next_state[:, TOKEN_ID[EOS]] == process.terminal).all()
    assert (process.next_state[process.terminal] == process.terminal).all()


def test_every_text_ends_by_the_horizon(process):
    states = np.array([process.initial])
    for _ in range(process.horizon):
        states = np.unique(process.next_state[states].ravel())
    assert states.tolist() == [process.terminal]


def test_sampling_is_deterministic_in_the_seed(process):
    first, again, other = process.sample(50, seed=3), process.sample(50, seed=3), process.sample(50, seed=4)
    np.testing.assert_array_equal(first.tokens, again.tokens)
    assert not np.array_equal(first.tokens, other.tokens)


def test_teacher_texts_follow_the_grammar(process):
    rollout = process.sample(500, seed=0)
    for tokens, length in zip(rollout.tokens, rollout.lengths, strict=True):
        words = process.decode(tokens[:length]).split()
        assert words[-1] == EOS and words[0] == "let"
        words = [w for w in words if w != "now"]
        v1, a, v2, ref, b, v2_again, c = words[1], words[3], words[6], words[8], words[10], words[13], words[15]
        assert v2 != v1 and ref == v1 and v2_again == v2
        assert int(c) == (int(a) + int(b)) % 10
        assert words[5] in CONNECTORS and words[12] in CONNECTORS
    states = rollout.states[:, :-1]
    assert (process.teacher[states, rollout.tokens][rollout.live] > 0).all()


def test_garden_frequencies_match_the_teacher(process):
    rollout = process.sample(4000, seed=1)
    garden_g = process.role[rollout.states[:, :-1]] == ROLES.index("garden")
    connectors = rollout.tokens[garden_g & rollout.live]
    connectors = connectors[np.isin(connectors, [TOKEN_ID[c] for c in CONNECTORS])]
    for connector, weight in zip(CONNECTORS, CONNECTOR_WEIGHTS, strict=True):
        share = (connectors == TOKEN_ID[connector]).mean()
        assert abs(share - weight) < 4 * np.sqrt(weight * (1 - weight) / len(connectors))


def test_bridge_target_follows_what_was_written_even_off_support(process):
    def next_token(text: str) -> str:
        state = process.states_along(np.array([process.encode(text)]))[0, -1]
        assert process.teacher[state].max() == 1.0
        return VOCAB[process.teacher[state].argmax()]

    assert next_token("let x = 3 ; then y = x + 2 ; so y =") == "5"
    assert next_token("let x = 9 ; then y = x + 4 ; so y =") == "3"  # off support: A = 9 wraps mod 10
    assert next_token("let z = 2 ; now so x =") == "z"  # the reference follows the bound variable
    assert next_token("let x = 2 ; then x = x + 1 ; so") == "x"  # v2 = v1 is off support, still repeated


def test_tokens_of_the_wrong_kind_are_ignored_until_the_teacher_gives_up(process):
    states = process.states_along(np.array([process.encode("let x = 3 ; now now so y = x + 1 ; then y =")]))[0]
    assert process.states[states[-1]].ignored == 1
    assert VOCAB[process.teacher[states[-1]].argmax()] == "4"
    states = process.states_along(np.array([process.encode("let x = ; ; =")]))[0]
    assert [process.states[s].ignored for s in states[3:-1]] == [0, 1, 2]
    assert states[-1] == process.terminal


def test_connectors_lead_to_one_state(process):
    state = process.states_along(np.array([process.encode("let x = 3 ; now")]))[0, -1]
    nxt = {int(process.next_state[state, TOKEN_ID[c]]) for c in CONNECTORS}
    assert len(nxt) == 1


def test_continuations_enumerate_the_teacher_exactly(process):
    texts, probs = process.continuations(process.initial, process.horizon)
    assert probs.sum() == pytest.approx(1.0) and len(np.unique(texts, axis=0)) == len(texts)
    states = process.states_along(texts)
    assert (states[:, -1] == process.terminal).all()
    path_probs = np.where(states[:, :-1] != process.terminal, process.teacher[states[:, :-1], texts], 1.0).prod(axis=1)
    np.testing.assert_allclose(path_probs, probs, rtol=1e-12)
    short, short_probs = process.continuations(process.initial, 4)
    assert short.shape[1] == 4 and short_probs.sum() == pytest.approx(1.0)
    assert len(short) == len(np.unique(texts[:, :4], axis=0))
