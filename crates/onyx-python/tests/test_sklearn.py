"""scikit-learn estimators and pipelines exported with skl2onnx, run through
Onyx and onnxruntime on the same inputs: every output must agree (labels
exactly, scores and probabilities within float32 rounding), and the labels
must also be the ones sklearn's own predict gives.

The models are fitted here on small synthetic data with fixed seeds, so the
test needs only the pinned packages of requirements-test.txt."""

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification, make_regression
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.ensemble import (
    AdaBoostClassifier,
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import (
    Binarizer,
    MaxAbsScaler,
    MinMaxScaler,
    Normalizer,
    OneHotEncoder,
    PolynomialFeatures,
    RobustScaler,
    StandardScaler,
)
from sklearn.svm import SVC, SVR, LinearSVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from skl2onnx import to_onnx
from skl2onnx.common.data_types import (
    DoubleTensorType,
    FloatTensorType,
    Int64TensorType,
    StringTensorType,
)

import onyx

# skl2onnx 1.20's newest tested opset, and the ai.onnx.ml version its tree
# converters write (TreeEnsembleClassifier/Regressor); onnxruntime 1.31 runs both.
OPSET = {"": 22, "ai.onnx.ml": 3}
RTOL, ATOL = 1e-5, 1e-6
SEED = 0
# Models are fitted on all rows but the first N_ROWS and run on those, so
# the inputs are unseen ones (a tree's leaves are not all pure for them, a
# scaler's outputs leave the fitted range).
N_ROWS = 40


def classification(n_classes=3, n_features=6):
    x, y = make_classification(
        n_samples=120,
        n_features=n_features,
        n_informative=4,
        n_redundant=0,
        n_classes=n_classes,
        random_state=SEED,
    )
    return x.astype(np.float32), y


def regression(n_features=5):
    x, y = make_regression(n_samples=120, n_features=n_features, noise=0.5, random_state=SEED)
    return x.astype(np.float32), y.astype(np.float32)


class Case:
    """A fitted estimator, its ONNX export and the inputs to run it on.
    `labels` is sklearn's own predict on those inputs, for classifiers."""

    def __init__(self, model, feeds, labels=None):
        self.model = model
        self.feeds = feeds
        self.labels = labels


def export(est, x, input_type=FloatTensorType, options=None):
    return to_onnx(
        est,
        initial_types=[("X", input_type([None, x.shape[1]]))],
        target_opset=OPSET,
        options=options,
    ).SerializeToString()


def classifier(est, n_classes=3, options=None, class_names=None):
    x, y = classification(n_classes)
    if class_names is not None:
        y = np.asarray(class_names, dtype=object)[y]
    est.fit(x[N_ROWS:], y[N_ROWS:])
    xs = x[:N_ROWS]
    return Case(export(est, x, options=options), {"X": xs}, est.predict(xs))


def regressor(est, input_type=FloatTensorType, dtype=np.float32):
    x, y = regression()
    x = x.astype(dtype)
    est.fit(x[N_ROWS:], y[N_ROWS:])
    return Case(export(est, x, input_type=input_type), {"X": x[:N_ROWS]})


def transformer(est, x, input_type=FloatTensorType):
    est.fit(x[N_ROWS:])
    return Case(export(est, x, input_type=input_type), {"X": x[:N_ROWS]})


def imputed_pca_pipeline():
    x, y = classification(n_features=8)
    x = x.copy()
    holes = np.random.default_rng(SEED).random(x.shape) < 0.1
    x[holes] = np.nan
    est = Pipeline(
        [
            ("impute", SimpleImputer(strategy="mean")),
            ("scale", StandardScaler()),
            ("pca", PCA(n_components=4, random_state=SEED)),
            ("classify", LogisticRegression(max_iter=500)),
        ]
    )
    est.fit(x[N_ROWS:], y[N_ROWS:])
    xs = x[:N_ROWS]
    return Case(export(est, x), {"X": xs}, est.predict(xs))


def mixed_table(rows):
    """Three numeric columns and two integer category codes (as floats: one
    ONNX input holds one element type, and sklearn fits on the same array)."""
    rng = np.random.default_rng(SEED)
    numeric = rng.standard_normal((rows, 3))
    colour = rng.integers(0, 4, rows)
    size = rng.choice([10, 20, 35], rows)
    x = np.column_stack([numeric, colour, size]).astype(np.float32)
    y = ((numeric[:, 0] > 0) ^ (colour % 2 == 1)).astype(np.int64)
    return x, y


def column_transformer_pipeline():
    x, y = mixed_table(120)
    est = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), [0, 1, 2]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), [3, 4]),
                    ]
                ),
            ),
            ("classify", LogisticRegression(max_iter=500)),
        ]
    )
    est.fit(x[N_ROWS:], y[N_ROWS:])
    xs = x[:N_ROWS].copy()
    xs[0, 3] = 7.0  # a category not seen in fit: encoded as all zeros
    return Case(export(est, x), {"X": xs}, est.predict(xs))


def one_hot_strings():
    rng = np.random.default_rng(SEED)
    x = np.stack(
        [rng.choice(["red", "green", "blue"], 60), rng.choice(["s", "m", "l", "xl"], 60)], axis=1
    ).astype(object)
    est = OneHotEncoder(handle_unknown="ignore").fit(x)
    xs = x[:N_ROWS].copy()
    xs[1, 0] = "purple"
    return Case(export(est, x, input_type=StringTensorType), {"X": xs})


def one_hot_ints():
    rng = np.random.default_rng(SEED)
    x = np.stack([rng.integers(0, 5, 60), rng.choice([3, 30, 300], 60)], axis=1).astype(np.int64)
    est = OneHotEncoder(handle_unknown="ignore").fit(x)
    xs = x[:N_ROWS].copy()
    xs[2, 1] = 31
    return Case(export(est, x, input_type=Int64TensorType), {"X": xs})


CASES = {
    "logistic_regression_zipmap": lambda: classifier(LogisticRegression(max_iter=500)),
    "logistic_regression_plain": lambda: classifier(
        LogisticRegression(max_iter=500), options={"zipmap": False}
    ),
    "logistic_regression_binary_string_labels": lambda: classifier(
        LogisticRegression(max_iter=500), n_classes=2, class_names=["no", "yes"]
    ),
    "linear_regression": lambda: regressor(LinearRegression()),
    "ridge": lambda: regressor(Ridge(alpha=0.5)),
    "linear_regression_double": lambda: regressor(LinearRegression(), DoubleTensorType, np.float64),
    "svc_probability": lambda: classifier(SVC(probability=True, random_state=SEED)),
    "svc_linear_binary": lambda: classifier(SVC(kernel="linear"), n_classes=2),
    "svc_rbf_votes": lambda: classifier(SVC()),
    "svc_poly_probability_string_labels": lambda: classifier(
        SVC(kernel="poly", degree=2, probability=True, random_state=SEED), class_names=["a", "b", "c"]
    ),
    "linear_svc": lambda: classifier(LinearSVC()),
    "svr": lambda: regressor(SVR(C=10.0)),
    "decision_tree_classifier": lambda: classifier(DecisionTreeClassifier(max_depth=5, random_state=SEED)),
    "decision_tree_classifier_binary": lambda: classifier(
        DecisionTreeClassifier(max_depth=5, random_state=SEED), n_classes=2
    ),
    "decision_tree_regressor": lambda: regressor(DecisionTreeRegressor(max_depth=5, random_state=SEED)),
    "random_forest_classifier": lambda: classifier(
        RandomForestClassifier(n_estimators=10, max_depth=5, random_state=SEED)
    ),
    "random_forest_classifier_binary": lambda: classifier(
        RandomForestClassifier(n_estimators=10, max_depth=5, random_state=SEED), n_classes=2
    ),
    "random_forest_classifier_plain": lambda: classifier(
        RandomForestClassifier(n_estimators=10, max_depth=5, random_state=SEED),
        options={"zipmap": False},
    ),
    "random_forest_regressor": lambda: regressor(
        RandomForestRegressor(n_estimators=10, max_depth=5, random_state=SEED)
    ),
    "gradient_boosting_regressor": lambda: regressor(
        GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=SEED)
    ),
    "gradient_boosting_classifier_binary": lambda: classifier(
        GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=SEED), n_classes=2
    ),
    "gradient_boosting_classifier_multiclass": lambda: classifier(
        GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=SEED)
    ),
    "extra_trees_classifier": lambda: classifier(ExtraTreesClassifier(n_estimators=5, random_state=SEED)),
    "adaboost_classifier": lambda: classifier(AdaBoostClassifier(n_estimators=5, random_state=SEED)),
    "mlp_classifier": lambda: classifier(
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=SEED)
    ),
    "gaussian_nb": lambda: classifier(GaussianNB()),
    "kneighbors_classifier": lambda: classifier(KNeighborsClassifier(n_neighbors=5)),
    "kneighbors_regressor": lambda: regressor(KNeighborsRegressor(n_neighbors=4, weights="distance")),
    "pipeline_impute_scale_pca_logistic": imputed_pca_pipeline,
    "column_transformer_onehot_scale_logistic": column_transformer_pipeline,
    "one_hot_encoder_strings": one_hot_strings,
    "one_hot_encoder_ints": one_hot_ints,
    "min_max_scaler": lambda: transformer(MinMaxScaler(), regression()[0]),
    "normalizer_l2": lambda: transformer(Normalizer(norm="l2"), regression()[0]),
    "normalizer_l1": lambda: transformer(Normalizer(norm="l1"), regression()[0]),
    "binarizer": lambda: transformer(Binarizer(threshold=0.25), regression()[0]),
    "robust_maxabs_polynomial": lambda: transformer(
        Pipeline(
            [("robust", RobustScaler()), ("maxabs", MaxAbsScaler()), ("poly", PolynomialFeatures(2))]
        ),
        regression()[0],
    ),
    "truncated_svd_and_scaler_union": lambda: transformer(
        FeatureUnion([("svd", TruncatedSVD(2, random_state=SEED)), ("scale", StandardScaler())]),
        regression()[0],
    ),
}


def assert_same(name, got, want):
    if isinstance(want, list):
        # ZipMap: one dict of class -> probability per row
        assert isinstance(got, list) and len(got) == len(want), name
        for row, (g, w) in enumerate(zip(got, want)):
            assert list(g) == list(w), f"{name} row {row}: keys {list(g)} != {list(w)}"
            np.testing.assert_allclose(
                [g[k] for k in w], [w[k] for k in w], rtol=RTOL, atol=ATOL, err_msg=f"{name} row {row}"
            )
        return
    got = np.asarray(got)
    assert got.dtype == want.dtype and got.shape == want.shape, (
        f"{name}: {got.dtype}{got.shape} != {want.dtype}{want.shape}"
    )
    if want.dtype.kind in "fc":
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=name)
    else:
        np.testing.assert_array_equal(got, want, err_msg=name)


# sklearn 1.9 deprecates SVC(probability=True); skl2onnx still reads its
# Platt-scaling attributes, which warns.
@pytest.mark.filterwarnings("ignore:.*probability=True.*:FutureWarning")
# a few hundred iterations give the MLP well-separated outputs; convergence
# does not matter here
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("case_name", sorted(CASES))
def test_matches_onnxruntime(case_name):
    case = CASES[case_name]()
    quiet = ort.SessionOptions()
    quiet.log_severity_level = 4  # its refusal of an empty batch is expected
    expected_sess = ort.InferenceSession(case.model, quiet, providers=["CPUExecutionProvider"])
    sess = onyx.InferenceSession(case.model, providers=["CPUExecutionProvider"])
    names = [o.name for o in expected_sess.get_outputs()]
    assert [o.name for o in sess.get_outputs()] == names
    got = compare_runs(sess, expected_sess, names, case.feeds)
    if case.labels is not None:
        # the first output of a converted classifier is its label
        np.testing.assert_array_equal(np.asarray(got[0]).ravel(), np.asarray(case.labels).ravel())
    # a batch of one row, and an empty batch where onnxruntime takes one
    # (its ArrayFeatureExtractor refuses zero rows, which several exports use)
    compare_runs(sess, expected_sess, names, {k: v[:1] for k, v in case.feeds.items()})
    empty = {k: v[:0] for k, v in case.feeds.items()}
    try:
        expected_sess.run(None, empty)
    except ort.capi.onnxruntime_pybind11_state.InvalidArgument:
        return
    compare_runs(sess, expected_sess, names, empty)


def compare_runs(sess, expected_sess, names, feeds):
    want = expected_sess.run(None, feeds)
    got = sess.run(None, feeds)
    assert len(got) == len(want)
    for name, g, w in zip(names, got, want):
        assert_same(name, g, w)
    return got
