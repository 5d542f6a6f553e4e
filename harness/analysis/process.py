"""A finite-state teacher: a known stochastic process writing arithmetic-style text with gardens and bridges.

The teacher writes `let V1 = A ; [now] G V2 = V1 + B ; [now] G V2 = C <eos>`, for example
`let x = 3 ; then y = x + 2 ; so y = 5 <eos>`:

- bridge choices: the variables V1 (any of x, y, z) and V2 (another one), and the numbers A (1-4) and B (1-5);
  each choice determines later tokens;
- bridge targets: the reference `V1` after `V2 =`, the repeated `V2`, and C = (A + B) mod 10, each determined by
  what was written before (probability 1 on one token);
- gardens: the connector G in {then, next, so, thus}, preceded by an optional `now`; every connector leads to
  the same state, so which one is written never matters later.

The state is what determines the future: the template slot, the registers still needed (V1 until its reference,
the running value until C, V2 until it is repeated) and how many tokens the teacher has ignored. Any token is
allowed at any state, so a student's text always has a state: EOS ends the text; a token of the slot's kind (any
variable at a variable slot, any number at a number slot, `now` or a connector at an optional `now`, a connector
at G, the word itself at a fixed slot) fills the slot, even if the teacher would not have written it; any other
token is ignored, like a typo, and the teacher still expects the same slot, until the (MAX_IGNORED + 1)-th ignored
token ends the text. Every step fills a slot or counts an ignored token, so the state graph is a DAG and every text
ends within HORIZON = len(SLOTS) + MAX_IGNORED tokens.

Tables (float64, exact): `teacher[s, a]` = p_T(a|s), `next_state[s, a]` = step(s, a); the terminal state absorbs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

EOS = "<eos>"
VARIABLES = ("x", "y", "z")
CONNECTORS = ("then", "next", "so", "thus")
CONNECTOR_WEIGHTS = (0.4, 0.3, 0.2, 0.1)
NUMBERS = tuple(str(n) for n in range(10))
VOCAB = (EOS, "let", "=", "+", ";", "now", *VARIABLES, *CONNECTORS, *NUMBERS)
TOKEN_ID = {token: i for i, token in enumerate(VOCAB)}

A_CHOICES = (1, 2, 3, 4)
B_CHOICES = (1, 2, 3, 4, 5)
P_NOW = 0.3

# (slot, role); a fixed slot's name is the word the teacher writes there.
SLOTS = (
    ("let", "fixed"),
    ("v1", "bridge_choice"),
    ("=", "fixed"),
    ("A", "bridge_choice"),
    (";", "fixed"),
    ("now?", "garden"),
    ("G", "garden"),
    ("v2", "bridge_choice"),
    ("=", "fixed"),
    ("ref", "bridge_target"),
    ("+", "fixed"),
    ("B", "bridge_choice"),
    (";", "fixed"),
    ("now?", "garden"),
    ("G", "garden"),
    ("v2 again", "bridge_target"),
    ("=", "fixed"),
    ("C", "bridge_target"),
    (EOS, "fixed"),
)
ROLES = ("fixed", "bridge_choice", "bridge_target", "garden", "terminal")
MAX_IGNORED = 2
HORIZON = len(SLOTS) + MAX_IGNORED
TERMINAL_SLOT = len(SLOTS)


@dataclass(frozen=True, order=True)
class State:
    """Template slot plus the registers the future still depends on (None once no longer needed)."""

    slot: int
    v1: int | None = None  # token id of the variable bound by `let`
    value: int | None = None  # A, then (A + B) mod 10
    v2: int | None = None  # token id of the variable bound in the second clause
    ignored: int = 0  # tokens of the wrong kind read so far

    @property
    def terminal(self) -> bool:
        return self.slot == TERMINAL_SLOT


def _ids(tokens: Sequence[str]) -> list[int]:
    return [TOKEN_ID[t] for t in tokens]


def _other_variables(v1: int) -> list[int]:
    return [v for v in _ids(VARIABLES) if v != v1]


def teacher_distribution(state: State) -> dict[int, float]:
    """p_T(.|state) as {token id: probability} over the teacher's support."""
    if state.terminal:
        return {TOKEN_ID[EOS]: 1.0}
    name = SLOTS[state.slot][0]
    if name == "v1":
        return {v: 1 / len(VARIABLES) for v in _ids(VARIABLES)}
    if name in ("A", "B"):
        choices = A_CHOICES if name == "A" else B_CHOICES
        return {TOKEN_ID[str(n)]: 1 / len(choices) for n in choices}
    if name == "G":
        return dict(zip(_ids(CONNECTORS), CONNECTOR_WEIGHTS, strict=True))
    if name == "now?":
        connectors = zip(_ids(CONNECTORS), CONNECTOR_WEIGHTS, strict=True)
        return {TOKEN_ID["now"]: P_NOW} | {c: (1 - P_NOW) * w for c, w in connectors}
    if name == "v2":
        others = _other_variables(state.v1)
        return {v: 1 / len(others) for v in others}
    if name == "ref":
        return {state.v1: 1.0}
    if name == "v2 again":
        return {state.v2: 1.0}
    if name == "C":
        return {TOKEN_ID[str(state.value)]: 1.0}
    return {TOKEN_ID[name]: 1.0}


def accepts(slot: int, token: int) -> bool:
    """Whether `token` is of the kind that fills `slot`."""
    name, word = SLOTS[slot][0], VOCAB[token]
    if name in ("v1", "v2", "ref", "v2 again"):
        return word in VARIABLES
    if name in ("A", "B", "C"):
        return word in NUMBERS
    if name == "now?":
        return word == "now" or word in CONNECTORS
    if name == "G":
        return word in CONNECTORS
    return word == name


def step(state: State, token: int) -> State:
    """The deterministic transition s' = step(s, a), defined for every token (see the module docstring)."""
    if state.terminal or token == TOKEN_ID[EOS]:
        return State(TERMINAL_SLOT)
    if not accepts(state.slot, token):
        if state.ignored == MAX_IGNORED:
            return State(TERMINAL_SLOT)
        return replace(state, ignored=state.ignored + 1)
    name, slot = SLOTS[state.slot][0], state.slot + 1
    v1, value, v2 = state.v1, state.value, state.v2
    if name == "v1":
        v1 = token
    elif name == "A":
        value = int(VOCAB[token])
    elif name == "now?" and VOCAB[token] in CONNECTORS:
        slot += 1  # the optional word was left out: the connector fills both slots
    elif name == "v2":
        v2 = token
    elif name == "ref":
        v1 = None
    elif name == "B":
        value = (value + int(VOCAB[token])) % 10
    elif name == "v2 again":
        v2 = None
    elif name == "C":
        value = None
    return State(slot, v1, value, v2, state.ignored)


@dataclass(frozen=True)
class Rollout:
    """Sampled texts: `tokens[i, t]` (EOS-padded after the end), `states[i, t]` = state before token t."""

    tokens: np.ndarray  # [n, HORIZON] int
    states: np.ndarray  # [n, HORIZON + 1] int
    lengths: np.ndarray  # [n] tokens written, EOS included

    @property
    def live(self) -> np.ndarray:
        """[n, HORIZON] True where a token was written from a non-terminal state."""
        return np.arange(self.tokens.shape[1])[None, :] < self.lengths[:, None]


# A policy reads the tokens so far [n, t] and their states [n, t + 1] and gives next-token probabilities [n, V].
Policy = Callable[[np.ndarray, np.ndarray], np.ndarray]


class FiniteStateTeacher:
    """The process, enumerated: every state reachable by any token sequence, with exact tables."""

    vocab = VOCAB
    horizon = HORIZON

    def __init__(self) -> None:
        self.states: list[State] = self._reachable(State(0))
        self.index = {s: i for i, s in enumerate(self.states)}
        self.initial = self.index[State(0)]
        self.terminal = self.index[State(TERMINAL_SLOT)]
        n, v = len(self.states), len(VOCAB)
        self.teacher = np.zeros((n, v))
        self.next_state = np.zeros((n, v), dtype=np.int64)
        for i, state in enumerate(self.states):
            for token, prob in teacher_distribution(state).items():
                self.teacher[i, token] = prob
            self.next_state[i] = [self.index[step(state, a)] for a in range(v)]
        self.role = np.array([ROLES.index("terminal" if s.terminal else SLOTS[s.slot][1]) for s in self.states])
        # The teacher's support, padded with probability 0: KL(p_T || p_S) reads only these entries of p_S.
        width = int((self.teacher > 0).sum(axis=1).max())
        self.support = np.argsort(-self.teacher, axis=1, kind="stable")[:, :width]
        self.support_probs = np.take_along_axis(self.teacher, self.support, axis=1)
        self.support_log_probs = np.log(np.where(self.support_probs > 0, self.support_probs, 1.0))  # padding: 0
        self._continuations: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    @staticmethod
    def _reachable(start: State) -> list[State]:
        seen, queue = {start}, deque([start])
        while queue:
            state = queue.popleft()
            for token in range(len(VOCAB)):
                nxt = step(state, token)
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        return sorted(seen)

    @property
    def num_states(self) -> int:
        return len(self.states)

    def encode(self, text: str) -> list[int]:
        return [TOKEN_ID[word] for word in text.split()]

    def decode(self, tokens: Sequence[int]) -> str:
        return " ".join(VOCAB[t] for t in tokens)

    def states_along(self, tokens: np.ndarray) -> np.ndarray:
        """[n, t] tokens -> [n, t + 1] states: the state before each token and after the last."""
        tokens = np.atleast_2d(np.asarray(tokens, dtype=np.int64))
        states = np.empty((tokens.shape[0], tokens.shape[1] + 1), dtype=np.int64)
        states[:, 0] = self.initial
        for t in range(tokens.shape[1]):
            states[:, t + 1] = self.next_state[states[:, t], tokens[:, t]]
        return states

    def teacher_policy(self, tokens: np.ndarray, states: np.ndarray) -> np.ndarray:
        return self.teacher[states[:, -1]]

    def rollout(self, policy: Policy, n: int, rng: np.random.Generator, prefix: Sequence[int] = ()) -> Rollout:
        """`n` texts: `prefix`, then tokens drawn from `policy` until EOS or the horizon."""
        tokens = np.full((n, HORIZON), TOKEN_ID[EOS], dtype=np.int64)
        tokens[:, : len(prefix)] = prefix
        states = self.states_along(tokens[:, : len(prefix)])
        for t in range(len(prefix), HORIZON):
            probs = policy(tokens[:, :t], states)
            cumulative = np.cumsum(probs, axis=1)
            draws = rng.random(n)[:, None] * cumulative[:, -1:]
            sampled = np.minimum((draws >= cumulative).sum(axis=1), len(VOCAB) - 1)
            done = states[:, -1] == self.terminal
            tokens[:, t] = np.where(done, TOKEN_ID[EOS], sampled)
            states = np.concatenate([states, self.next_state[states[:, -1], tokens[:, t]][:, None]], axis=1)
        lengths = (states[:, :-1] != self.terminal).sum(axis=1)
        return Rollout(tokens=tokens, states=states, lengths=lengths)

    def sample(self, n: int, seed: int) -> Rollout:
        """`n` texts from the teacher, deterministic in `seed`."""
        return self.rollout(self.teacher_policy, n, np.random.default_rng(seed))

    def continuations(self, state: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """Every text the teacher can write from `state` in `horizon` tokens, with its probability (memoised).

        Returns tokens [N, horizon] (EOS-padded after the end) and probabilities [N] summing to 1.
        """
        key = (state, horizon)
        if key not in self._continuations:
            if state == self.terminal or horizon == 0:
                tokens, probs = np.full((1, horizon), TOKEN_ID[EOS], dtype=np.int64), np.ones(1)
            else:
                parts = [
                    (self.continuations(int(self.next_state[state, a]), horizon - 1), a)
                    for a in np.flatnonzero(self.teacher[state])
                ]
                tokens = np.concatenate([np.column_stack([np.full(len(t), a), t]) for (t, _), a in parts])
                probs = np.concatenate([self.teacher[state, a] * p for (_, p), a in parts])
            self._continuations[key] = (tokens, probs)
        return self._continuations[key]
