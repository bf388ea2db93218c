"""The PhysioNet/CinC Challenge 2021 score, as the official `evaluate_model.py` computes it.

The classes, their equivalences and the reward matrix come from the official tables in a scoring
folder (`weights.csv`, `dx_mapping_scored.csv`); nothing here lists classes by hand. The tables are
packaged with ecgscale (`packaged_scoring_folder`, used wherever no folder is given). The
definition followed (final version of physionetchallenges/evaluation-2021):

* Classes are the row/column labels of `weights.csv`; a label `a|b` makes SNOMED-CT codes `a` and
  `b` one class. A record is positive for a class when any of its codes is one of the class's codes;
  a classifier output column named by any code of a class (or by `a|b`) counts for that class,
  positive if any such column is positive.
* Modified confusion matrix: record i adds `1 / n_i` to `A[j, k]` for every label class j and
  output class k it has, where `n_i = max(|labels_i ∪ outputs_i|, 1)` counts distinct classes.
* Reward `R(outputs) = sum(W * A)`; the score is `(R(outputs) - R(inactive)) / (R(labels) -
  R(inactive))`, where "inactive" outputs only the normal class (sinus rhythm, 426783006) for every
  record, and `R(labels)` is the perfect classifier. It is 0.0 when the two baselines tie. So a
  perfect classifier scores 1 and "always normal" scores 0.

The official script reports four more scores, all over every scored class (`challenge_metrics`,
reported by the task probes as `challenge_auroc`, `challenge_auprc`, `challenge_accuracy`,
`challenge_f_measure` next to `challenge`):

* AUROC and AUPRC per class from the scalar outputs (a class without an output column scores 0
  for every record), averaged over the classes where they are defined: AUROC where a class has
  positive and negative labels (a constant output gives 0.5); AUPRC where it has a positive label
  (1.0 for a class where every record is positive).
* Accuracy: the fraction of records whose binary outputs equal their labels on every class.
* F-measure: 2 TP / (2 TP + FP + FN) per class, averaged over every class except those with
  neither a positive label nor a positive output (a class without positives but with false alarms
  counts as 0; one with positives but no output column counts as 0).

These are the definitions of `ecgscale.evaluate.metrics.auroc`, `auprc` and `f1_at_thresholds`.

One deliberate difference: the official loader turns a non-numeric weight into NaN and `nansum`
ignores it (a weight of 0); here such a table is rejected as malformed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np

from ecgscale.errors import DataError, UserError
from ecgscale.evaluate import metrics as M

NORMAL_CODE = "426783006"
"""SNOMED-CT code of sinus rhythm, the "normal" class of the Challenge 2021 metric."""

WEIGHTS_FILE = "weights.csv"
MAPPING_FILE = "dx_mapping_scored.csv"
UNSCORED_FILE = "dx_mapping_unscored.csv"
PACKAGED_SCORING = "packaged"
"""What a store's provenance records as its `scoring` folder when the packaged tables were used."""


def packaged_scoring_folder() -> Path:
    """The official Challenge 2021 tables shipped with ecgscale (`ecgscale/evaluate/scoring2021`,
    byte-identical to physionetchallenges/evaluation-2021; origin in its SOURCES.md)."""
    return Path(str(resources.files("ecgscale.evaluate").joinpath("scoring2021")))


def scoring_folder(value: str | Path | None) -> Path:
    """The scoring folder `value` names: the packaged tables for None or `PACKAGED_SCORING`."""
    if value is None or str(value) == PACKAGED_SCORING:
        return packaged_scoring_folder()
    return Path(value)


@dataclass(frozen=True, eq=False)
class ChallengeTables:
    """The scored classes and the reward matrix of one scoring folder.

    Attributes:
        classes: one frozenset of SNOMED-CT codes (strings) per scored class, in table order.
        names: the class labels as written in `weights.csv` (`"713427006|59118001"`).
        abbreviations: the same with abbreviations from `dx_mapping_scored.csv` (`"CRBBB|RBBB"`).
        weights: `(classes, classes)` float64 reward matrix; rows are labels, columns outputs.
        normal_index: index of the class that holds `NORMAL_CODE`.
        folder: the scoring folder the tables were read from.
    """

    classes: tuple[frozenset[str], ...]
    names: tuple[str, ...]
    abbreviations: tuple[str, ...]
    weights: np.ndarray = field(repr=False)
    normal_index: int
    folder: Path

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_of(self, code: str | int) -> int | None:
        """Index of the class that scores `code`, or None for an unscored code."""
        return self._code_index.get(str(code).strip())

    @cached_property
    def _code_index(self) -> dict[str, int]:
        return {code: j for j, codes in enumerate(self.classes) for code in codes}

    def encode_labels(self, code_lists: Iterable[Sequence[str | int]]) -> np.ndarray:
        """One-hot `(records, classes)` bool labels from each record's list of SNOMED-CT codes.

        Unscored codes are ignored, equivalent codes map to their shared class.
        """
        index = self._code_index
        rows: list[np.ndarray] = []
        for i, codes in enumerate(code_lists):
            if isinstance(codes, str):
                raise UserError(
                    f"record {i}: expected a list of SNOMED-CT codes, got the string {codes!r}"
                )
            row = np.zeros(self.num_classes, dtype=bool)
            hits = [index[c] for c in (str(code).strip() for code in codes) if c in index]
            row[hits] = True
            rows.append(row)
        return np.array(rows, dtype=bool).reshape(len(rows), self.num_classes)

    def column_map(self, columns: Sequence[str | int]) -> np.ndarray:
        """`(columns, classes)` bool: which scored class each output column counts for.

        A column is named by one code or by codes joined with `|`; columns of unscored codes map to
        no class.
        """
        index = self._code_index
        out = np.zeros((len(columns), self.num_classes), dtype=bool)
        for m, name in enumerate(columns):
            for code in str(name).split("|"):
                j = index.get(code.strip())
                if j is not None:
                    out[m, j] = True
        return out

    def encode_outputs(
        self, columns: Sequence[str | int], binary: np.ndarray, scalar: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Map classifier outputs over arbitrary code columns onto the scored classes.

        Args:
            columns: the code (or `a|b` codes) of each output column.
            binary: `(records, columns)` 0/1 decisions.
            scalar: optional `(records, columns)` probabilities.

        Returns:
            `(records, classes)` bool decisions (a class is positive when any of its columns is)
            and, when `scalar` is given, `(records, classes)` float64 scores (the mean over its
            columns; 0 for a class with no column), as the official loader does.
        """
        cmap = self.column_map(columns)
        binary = _as_2d(binary, "binary outputs", len(columns))
        decisions = (binary.astype(np.float64) @ cmap) > 0
        if scalar is None:
            return decisions, None
        scalar = _as_2d(scalar, "scalar outputs", len(columns)).astype(np.float64)
        counts = cmap.sum(axis=0)
        means = (scalar @ cmap) / np.maximum(counts, 1)
        return decisions, means


def _as_2d(array: np.ndarray, what: str, width: int) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] != width:
        raise UserError(f"{what}: expected shape (records, {width}), got {array.shape}")
    return array


def _read_csv(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected the official Challenge 2021 table")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return [[cell.strip() for cell in row] for row in csv.reader(handle) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: unreadable ({exc}); expected a UTF-8 CSV table") from exc


def _parse_weights(path: Path) -> tuple[list[str], np.ndarray]:
    """Class labels and the square weight matrix of `weights.csv`."""
    table = _read_csv(path)
    if len(table) < 2 or len(table[0]) < 2:
        raise DataError(f"{path}: empty table; expected a header row of classes and one row each")
    header = table[0][1:]
    k = len(header)
    if len(table) - 1 != k:
        raise DataError(f"{path}: {len(table) - 1} rows for {k} columns; expected a square table")
    values = np.empty((k, k), dtype=np.float64)
    for i, row in enumerate(table[1:]):
        if len(row) != k + 1:
            raise DataError(f"{path}: row {i + 2} has {len(row)} cells; expected {k + 1}")
        if set(row[0].split("|")) != set(header[i].split("|")):
            raise DataError(
                f"{path}: row {i + 2} is labelled {row[0]!r} but column {i + 2} is {header[i]!r}; "
                "expected the same classes in the same order"
            )
        try:
            values[i] = [float(cell) for cell in row[1:]]
        except ValueError as exc:
            raise DataError(f"{path}: row {i + 2}: {exc}; expected numbers") from exc
    if not np.all(np.isfinite(values)):
        raise DataError(f"{path}: non-finite weight; expected finite numbers")
    return header, values


def _parse_mapping(path: Path) -> dict[str, str]:
    """SNOMED-CT code -> abbreviation from `dx_mapping_scored.csv`."""
    table = _read_csv(path)
    if not table:
        raise DataError(f"{path}: empty table; expected columns SNOMEDCTCode and Abbreviation")
    header = table[0]
    try:
        code_col, abbr_col = header.index("SNOMEDCTCode"), header.index("Abbreviation")
    except ValueError:
        raise DataError(
            f"{path}: header {header[:4]}...; expected columns SNOMEDCTCode and Abbreviation"
        ) from None
    mapping: dict[str, str] = {}
    for i, row in enumerate(table[1:]):
        if len(row) <= max(code_col, abbr_col) or not row[code_col]:
            raise DataError(f"{path}: row {i + 2} lacks a code or abbreviation")
        mapping[row[code_col]] = row[abbr_col]
    return mapping


def load_challenge_tables(folder: str | Path | None = None) -> ChallengeTables:
    """Read `weights.csv` and `dx_mapping_scored.csv` from a scoring folder (by default, or for
    `PACKAGED_SCORING`, the tables packaged with ecgscale).

    Raises `DataError` (one line) when a file is missing or malformed, when a code is listed in two
    classes, when the two tables disagree on the scored codes, or when the normal class is absent.
    """
    folder = scoring_folder(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; expected a folder with {WEIGHTS_FILE}")
    names, weights = _parse_weights(folder / WEIGHTS_FILE)
    abbreviation_of = _parse_mapping(folder / MAPPING_FILE)

    classes = tuple(frozenset(code for code in name.split("|")) for name in names)
    codes = [code for name in names for code in name.split("|")]
    if len(codes) != len(set(codes)):
        twice = sorted({c for c in codes if codes.count(c) > 1})
        raise DataError(f"{folder / WEIGHTS_FILE}: codes {twice} appear in two classes")
    if set(codes) != set(abbreviation_of):
        only_w = sorted(set(codes) - set(abbreviation_of))
        only_m = sorted(set(abbreviation_of) - set(codes))
        raise DataError(
            f"{folder}: {WEIGHTS_FILE} and {MAPPING_FILE} disagree on the scored codes "
            f"(only in weights: {only_w}, only in mapping: {only_m})"
        )
    normal = [j for j, c in enumerate(classes) if NORMAL_CODE in c]
    if not normal:
        raise DataError(f"{folder / WEIGHTS_FILE}: normal class {NORMAL_CODE} is not scored")
    abbreviations = tuple(
        "|".join(abbreviation_of[code] for code in name.split("|")) for name in names
    )
    weights.setflags(write=False)
    return ChallengeTables(classes, tuple(names), abbreviations, weights, normal[0], folder)


def _check_pair(tables: ChallengeTables, labels: np.ndarray, outputs: np.ndarray) -> None:
    k = tables.num_classes
    for what, array in (("labels", labels), ("outputs", outputs)):
        if array.ndim != 2 or array.shape[1] != k:
            raise UserError(f"challenge {what}: expected shape (records, {k}), got {array.shape}")
    if labels.shape != outputs.shape:
        raise UserError(f"challenge labels {labels.shape} and outputs {outputs.shape} differ")


def modified_confusion_matrix(labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """`(classes, classes)` matrix A: record i adds `1/n_i` to `A[j, k]` for label j, output k.

    `n_i = max(|labels_i ∪ outputs_i|, 1)`, the number of distinct classes the record has as a
    label or an output. Rows are labels, columns outputs.
    """
    labels, outputs = np.asarray(labels, bool), np.asarray(outputs, bool)
    norm = np.maximum((labels | outputs).sum(axis=1), 1).astype(np.float64)
    return labels.T.astype(np.float64) @ (outputs / norm[:, None])


def _record_rewards(weights: np.ndarray, labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """`(records,)` reward of each record: its share of `sum(W * A)`."""
    norm = np.maximum((labels | outputs).sum(axis=1), 1).astype(np.float64)
    return ((labels.astype(np.float64) @ weights) * outputs).sum(axis=1) / norm


def challenge_statistic(
    tables: ChallengeTables, labels: np.ndarray, outputs: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Challenge score under record weights `(replicates, records)`, returning `(replicates,)`.

    With integer counts as weights this is the score of the resampled records, so it plugs into
    `ecgscale.evaluate.metrics.bootstrap_ci` via `functools.partial(challenge_statistic, tables)`.
    """
    labels, outputs = np.asarray(labels, bool), np.asarray(outputs, bool)
    _check_pair(tables, labels, outputs)
    inactive = np.zeros_like(outputs)
    inactive[:, tables.normal_index] = True
    w = np.atleast_2d(np.asarray(weights, np.float64))
    observed = w @ _record_rewards(tables.weights, labels, outputs)
    correct = w @ _record_rewards(tables.weights, labels, labels)
    baseline = w @ _record_rewards(tables.weights, labels, inactive)
    denom = correct - baseline
    safe = np.where(denom != 0, denom, 1.0)
    return np.where(denom != 0, (observed - baseline) / safe, 0.0)


def challenge_score(tables: ChallengeTables, labels: np.ndarray, outputs: np.ndarray) -> float:
    """The Challenge 2021 metric of `(records, classes)` bool outputs against labels.

    1 for a perfect classifier, 0 for one that outputs only the normal class; 0.0 when those two
    tie (for example when every record is labelled normal only).
    """
    labels = np.asarray(labels, bool)
    return float(challenge_statistic(tables, labels, outputs, np.ones((1, labels.shape[0])))[0])


@dataclass(frozen=True, eq=False)
class ChallengeMetrics:
    """The five scores of the official Challenge 2021 evaluation over every scored class.

    Attributes:
        auroc, auprc, accuracy, f_measure, challenge: the macro AUROC, macro AUPRC, accuracy, macro
            F-measure and Challenge metric (module docstring); NaN where no class is defined.
        auroc_per_class, auprc_per_class, f_measure_per_class: `(classes,)` float64 in table
            order, NaN where undefined.
        intervals: percentile bootstrap intervals of the five scores over records, by result
            name (`challenge_intervals`); empty when none were asked for.
    """

    auroc: float
    auprc: float
    accuracy: float
    f_measure: float
    challenge: float
    auroc_per_class: np.ndarray = field(repr=False)
    auprc_per_class: np.ndarray = field(repr=False)
    f_measure_per_class: np.ndarray = field(repr=False)
    intervals: Mapping[str, M.Intervals] = field(default_factory=dict, repr=False)

    def scores(self) -> dict[str, float | None]:
        """The task-level scores under their result names (`challenge_auroc`, ...); None where
        undefined (NaN), as other undefined task metrics. With `intervals`, also `<name>_lo`,
        `<name>_hi` and, where some resamples left a score undefined, `<name>_defined`."""
        values = {
            "challenge_auroc": self.auroc,
            "challenge_auprc": self.auprc,
            "challenge_accuracy": self.accuracy,
            "challenge_f_measure": self.f_measure,
            "challenge": self.challenge,
        }
        out = {name: None if np.isnan(v) else float(v) for name, v in values.items()}
        for name, value in values.items():
            found = self.intervals.get(name)
            if found is None or np.isnan(value):
                continue
            low, high, defined = float(found.low), float(found.high), float(found.defined)
            out[f"{name}_lo"] = None if np.isnan(low) else low
            out[f"{name}_hi"] = None if np.isnan(high) else high
            if defined < 1:
                out[f"{name}_defined"] = defined
        return out


def challenge_intervals(
    tables: ChallengeTables,
    labels: np.ndarray,
    binary: np.ndarray,
    scalar: np.ndarray,
    bootstrap: M.Bootstrap = M.DEFAULT_BOOTSTRAP,
) -> dict[str, M.Intervals]:
    """Percentile bootstrap intervals over records of the five scores (`challenge`,
    `challenge_auroc`, `challenge_auprc`, `challenge_accuracy`, `challenge_f_measure`), all on
    the same resamples (`ecgscale.evaluate.metrics.bootstrap_intervals`)."""
    labels, binary = np.asarray(labels, bool), np.asarray(binary, bool)
    scalar = np.asarray(scalar, np.float64)
    exact = np.all(labels == binary, axis=1).astype(np.float64)

    def evaluate(counts: np.ndarray) -> dict[str, np.ndarray]:
        au, ap = M.weighted_ranking(labels, scalar, counts)
        return {
            "challenge_auroc": M.class_macro(au),
            "challenge_auprc": M.class_macro(ap),
            "challenge_accuracy": (counts @ exact) / counts.sum(axis=1),
            "challenge_f_measure": M.class_macro(M.weighted_f1_per_class(labels, binary, counts)),
            "challenge": challenge_statistic(tables, labels, binary, counts),
        }

    return M.bootstrap_intervals(evaluate, labels.shape[0], bootstrap)


def challenge_metrics(
    tables: ChallengeTables,
    labels: np.ndarray,
    binary: np.ndarray,
    scalar: np.ndarray,
    bootstrap: M.Bootstrap | None = None,
) -> ChallengeMetrics:
    """All scores of `evaluate_model.py` for `(records, classes)` bool labels and binary outputs
    and float scalar outputs over the scored classes (`ChallengeTables.encode_outputs`); with
    `bootstrap`, their intervals (`challenge_intervals`)."""
    labels, binary = np.asarray(labels, bool), np.asarray(binary, bool)
    scalar = np.asarray(scalar, np.float64)
    _check_pair(tables, labels, binary)
    _check_pair(tables, labels, scalar)
    auroc, auprc = M.auroc(labels, scalar), M.auprc(labels, scalar)
    f_measure = M.f1_at_thresholds(labels, binary.astype(np.float64), 0.5)
    return ChallengeMetrics(
        auroc=auroc.macro,
        auprc=auprc.macro,
        accuracy=float(np.mean(np.all(labels == binary, axis=1))),
        f_measure=f_measure.macro,
        challenge=challenge_score(tables, labels, binary),
        auroc_per_class=auroc.per_class,
        auprc_per_class=auprc.per_class,
        f_measure_per_class=f_measure.per_class,
        intervals=(
            {}
            if bootstrap is None
            else challenge_intervals(tables, labels, binary, scalar, bootstrap)
        ),
    )
