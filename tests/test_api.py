"""The public API (dm_pix style): exported once, documented, options keyword-only, cheap to import."""

import ast
import importlib
import importlib.metadata
import inspect
import subprocess
import sys

import pytest

import jdeconv

NAMESPACES = ("jdeconv", "jdeconv.data", "jdeconv.experiment")

# Positional like MATLAB's conv2(x, h, 'valid'): the geometry of the forward model and its
# adjoints, operators, loss and normal equations. Every other parameter with a default is
# keyword-only.
POSITIONAL_WITH_DEFAULT = {
    ("jdeconv", "conv2d"): {"mode"},
    ("jdeconv", "conv2d_adjoint_kernel"): {"mode"},
    ("jdeconv", "conv2d_adjoint_image"): {"mode"},
    ("jdeconv", "data_loss"): {"mode"},
    ("jdeconv", "data_loss_grad"): {"mode"},
    ("jdeconv", "normal_equations"): {"mode"},
    ("jdeconv", "kernel_operator"): {"mode"},
    ("jdeconv", "image_operator"): {"mode"},
    ("jdeconv", "conv2d_field"): {"mode"},
    ("jdeconv", "conv2d_field_adjoint_image"): {"mode"},
    ("jdeconv", "conv2d_field_adjoint_kernels"): {"mode"},
    ("jdeconv", "image_field_operator"): {"mode"},
    ("jdeconv", "kernel_field_operator"): {"mode"},
    ("jdeconv", "conditioning_report"): {"mode"},
    # the subject of the call, not an option (a shape, a name, a source, a destination)
    ("jdeconv", "project_prior"): {"support"},
    ("jdeconv.data", "make_image"): {"shape"},
    ("jdeconv.data", "motion_kernel"): {"angle"},
    ("jdeconv.data", "natural_image"): {"name"},
    ("jdeconv.data", "shapes_image"): {"shape"},
    ("jdeconv.experiment", "load_config"): {"source", "overrides"},
    ("jdeconv.experiment", "run_experiment"): {"out_dir"},
}

# What `import jdeconv` must not load: the application layer's libraries.
HEAVY = ("pydantic", "yaml", "PIL", "imageio", "tifffile", "matplotlib", "tqdm")


def _public():
    """(namespace, name, object) for every name in every namespace's __all__."""
    out = []
    for ns in NAMESPACES:
        module = importlib.import_module(ns)
        for name in module.__all__:
            out.append((ns, name, getattr(module, name)))
    return out


PUBLIC = _public()
FUNCTIONS = [(ns, name, obj) for ns, name, obj in PUBLIC if inspect.isfunction(obj)]


@pytest.mark.parametrize("ns", NAMESPACES)
def test_every_exported_name_is_importable(ns):
    module = importlib.import_module(ns)
    assert len(module.__all__) == len(set(module.__all__)), "duplicates in __all__"
    for name in module.__all__:
        exec(f"from {ns} import {name}", {})
    assert set(module.__all__) <= set(dir(module))


def test_every_name_is_exported_once():
    """No object is exported twice, within or across the three namespaces."""
    seen = {}
    for ns, name, obj in PUBLIC:
        if isinstance(obj, (str, int, float, tuple, frozenset)) and not callable(obj):
            key = (ns, name)  # values may coincide (two tuples of names); names may not
        else:
            key = id(obj)
        assert key not in seen, f"{ns}.{name} is also exported as {seen[key]}"
        seen[key] = f"{ns}.{name}"
    names = [name for _, name, _ in PUBLIC if not name.startswith("__")]
    dup = sorted({n for n in names if names.count(n) > 1})
    assert not dup, f"names exported by more than one namespace: {dup}"


def _attribute_documented(module_name: str, name: str) -> bool:
    """A module-level constant with an attribute docstring or a ``#:`` comment."""
    try:
        module = importlib.import_module(module_name)
        source = inspect.getsource(module)
    except (ImportError, OSError, TypeError):
        return False
    lines = source.splitlines()
    body = ast.parse(source).body
    for i, node in enumerate(body):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            after = body[i + 1] if i + 1 < len(body) else None
            if isinstance(after, ast.Expr) and isinstance(getattr(after, "value", None), ast.Constant) \
                    and isinstance(after.value.value, str):
                return True
            if node.lineno >= 2 and lines[node.lineno - 2].strip().startswith("#:"):
                return True
    return False


def _defining_modules(ns, name):
    module = importlib.import_module(ns)
    exports = getattr(module, "_EXPORTS", {})
    if name in exports:
        yield f"{ns}.{exports[name]}"
    for sub in sorted(sys.modules):
        if sub.startswith(ns + "._") and sub.count(".") == ns.count(".") + 1:
            yield sub


@pytest.mark.parametrize("ns, name, obj", PUBLIC, ids=[f"{ns}.{n}" for ns, n, _ in PUBLIC])
def test_every_public_name_is_documented(ns, name, obj):
    if name == "__version__":
        return  # checked against the distribution below
    if callable(obj):
        doc = obj.__doc__
        assert doc and doc.strip(), f"{ns}.{name} has no docstring"
        assert doc is not type(obj).__doc__ or inspect.isclass(obj)
        if inspect.isclass(obj):
            assert "__doc__" in vars(obj) and vars(obj)["__doc__"], f"{ns}.{name}: no own docstring"
        return
    # constants: an attribute docstring / #: comment where defined, or named in the namespace's docs
    module = importlib.import_module(ns)
    documented = name in (module.__doc__ or "") or any(
        _attribute_documented(m, name) for m in _defining_modules(ns, name))
    assert documented, f"{ns}.{name} is not documented"


@pytest.mark.parametrize("ns, name, obj", FUNCTIONS, ids=[f"{ns}.{n}" for ns, n, _ in FUNCTIONS])
def test_options_are_keyword_only(ns, name, obj):
    allowed = POSITIONAL_WITH_DEFAULT.get((ns, name), set())
    params = inspect.signature(obj).parameters.values()
    positional = {p.name for p in params if p.default is not inspect.Parameter.empty
                  and p.kind is not inspect.Parameter.KEYWORD_ONLY}
    assert positional <= allowed, (f"{ns}.{name}: parameters with defaults must be keyword-only: "
                                   f"{sorted(positional - allowed)}")


def test_the_exception_list_names_real_parameters():
    for (ns, name), params in POSITIONAL_WITH_DEFAULT.items():
        sig = inspect.signature(getattr(importlib.import_module(ns), name))
        assert params <= set(sig.parameters), (ns, name)


def test_import_loads_no_application_libraries():
    code = ("import sys, jdeconv\n"
            "jdeconv.estimate_kernel, jdeconv.conv2d, jdeconv.RESULTS\n"
            f"heavy = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]\n"
            "assert not heavy, heavy\n"
            "assert 'jdeconv.data' not in sys.modules and 'jdeconv.experiment' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_version_is_the_installed_distributions():
    assert isinstance(jdeconv.__version__, str) and jdeconv.__version__
    assert jdeconv.__version__ == importlib.metadata.version("jdeconv")


def test_subpackages_are_attributes():
    assert jdeconv.data.__name__ == "jdeconv.data"
    assert jdeconv.experiment.__name__ == "jdeconv.experiment"
    with pytest.raises(AttributeError, match="no attribute 'shapes_image'"):
        jdeconv.shapes_image  # moved to jdeconv.data
    assert set(jdeconv.__all__) <= set(dir(jdeconv))


def _imports_of_every_module() -> dict[str, set[str]]:
    """``module -> the package modules it imports`` (at module level or inside functions)."""
    from pathlib import Path

    root = Path(jdeconv.__file__).parent
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    edges = {name: set() for name in names}
    for name, path in names.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    target = target if target in names else node.module
                    if target in names and target != name:
                        edges[name].add(target)
            elif isinstance(node, ast.Import):
                edges[name].update(a.name for a in node.names if a.name in names and a.name != name)
    return edges


def test_no_module_imports_one_that_imports_it_back():
    # The packages' __init__ files re-export their layer and are left out; every other
    # import, lazy ones inside functions included, goes one way.
    edges = _imports_of_every_module()
    packages = {"jdeconv", "jdeconv.data", "jdeconv.experiment"}

    def reachable(start):
        seen, stack = set(), [start]
        while stack:
            for nxt in edges[stack.pop()] - packages:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    loops = sorted((a, b) for a in edges.keys() - packages for b in edges[a] - packages
                   if a in reachable(b))
    assert not loops, f"import loops (a imports b, b reaches a back): {loops}"
    # and the layers: nothing in the core imports the experiment layer (``python -m jdeconv``
    # is the command line's entry point, not the core)
    core = [m for m in edges
            if not m.startswith(("jdeconv.experiment", "jdeconv.data", "jdeconv.__main__"))]
    assert not [(m, t) for m in core for t in edges[m] if t.startswith("jdeconv.experiment")]
