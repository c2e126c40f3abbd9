/* leakext: a tiny C extension for leakscope's native scenarios.
 *
 * keep(n)   mallocs n bytes per call and keeps the pointer forever (the leak);
 * borrow(n) mallocs n bytes and frees them before returning (the fixed code);
 * churn(n, times) mallocs and frees n bytes `times` times per call (heavy but
 *           balanced native allocation);
 * keep_mapped(n) mmaps n bytes per call, writes to every page and keeps the
 *           mapping forever: RSS grows, malloc's counters do not;
 * pool(count) keeps exactly `count` mapped 32 KiB blocks, mapping (and
 *           touching) or unmapping blocks to get there: an arena allocator's
 *           bounded cache, outside malloc.
 *
 * Each allocation goes through its own non-inlined function, so that a native
 * stack names the allocator: leakext_keep_buffer is the leaking one.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void **kept = NULL;
static size_t kept_len = 0, kept_cap = 0;

__attribute__((noinline)) void *leakext_keep_buffer(size_t n) {
    void *buffer = malloc(n);
    if (buffer != NULL) {
        memset(buffer, 0xab, n);
    }
    return buffer;
}

__attribute__((noinline)) void *leakext_scratch_buffer(size_t n) {
    void *buffer = malloc(n);
    if (buffer != NULL) {
        memset(buffer, 0xcd, n);
    }
    return buffer;
}

__attribute__((noinline)) void *leakext_map_block(size_t n) {
    void *block = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (block == MAP_FAILED) {
        return NULL;
    }
    memset(block, 0xef, n); /* touch every page: resident, not only reserved */
    return block;
}

static PyObject *keep(PyObject *self, PyObject *args) {
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "n", &n)) {
        return NULL;
    }
    if (kept_len == kept_cap) {
        /* The pointer list grows by doubling: its own reallocs are a bounded
           share of what is kept, the buffers are the leak. */
        size_t cap = kept_cap ? kept_cap * 2 : 1024;
        void **grown = realloc(kept, cap * sizeof(void *));
        if (grown == NULL) {
            return PyErr_NoMemory();
        }
        kept = grown;
        kept_cap = cap;
    }
    kept[kept_len++] = leakext_keep_buffer((size_t)n);
    Py_RETURN_NONE;
}

static PyObject *keep_mapped(PyObject *self, PyObject *args) {
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "n", &n)) {
        return NULL;
    }
    /* The mapping's address is dropped on purpose: nothing ever unmaps it. */
    if (leakext_map_block((size_t)n) == NULL) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

#define POOL_BLOCK (32 * 1024)
#define POOL_MAX 4096
static void *pool_blocks[POOL_MAX];
static Py_ssize_t pool_len = 0;

static PyObject *pool(PyObject *self, PyObject *args) {
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "n", &count)) {
        return NULL;
    }
    if (count < 0 || count > POOL_MAX) {
        PyErr_SetString(PyExc_ValueError, "pool size out of range");
        return NULL;
    }
    while (pool_len > count) {
        munmap(pool_blocks[--pool_len], POOL_BLOCK);
    }
    while (pool_len < count) {
        void *block = leakext_map_block(POOL_BLOCK);
        if (block == NULL) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        pool_blocks[pool_len++] = block;
    }
    return PyLong_FromSsize_t(pool_len);
}

static PyObject *borrow(PyObject *self, PyObject *args) {
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "n", &n)) {
        return NULL;
    }
    void *buffer = leakext_scratch_buffer((size_t)n);
    unsigned char first = buffer ? ((unsigned char *)buffer)[0] : 0;
    free(buffer);
    return PyLong_FromLong(first);
}

static PyObject *churn(PyObject *self, PyObject *args) {
    Py_ssize_t n, times;
    if (!PyArg_ParseTuple(args, "nn", &n, &times)) {
        return NULL;
    }
    long total = 0;
    for (Py_ssize_t i = 0; i < times; i++) {
        void *buffer = leakext_scratch_buffer((size_t)n);
        total += buffer ? ((unsigned char *)buffer)[n / 2] : 0;
        free(buffer);
    }
    return PyLong_FromLong(total);
}

static PyMethodDef methods[] = {
    {"keep", keep, METH_VARARGS, "malloc n bytes and keep them (leaks)"},
    {"keep_mapped", keep_mapped, METH_VARARGS, "mmap n bytes, touch them and keep them"},
    {"pool", pool, METH_VARARGS, "keep exactly `count` mapped 32 KiB blocks"},
    {"borrow", borrow, METH_VARARGS, "malloc n bytes and free them"},
    {"churn", churn, METH_VARARGS, "malloc and free n bytes, `times` times"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "leakext", NULL, -1, methods};

PyMODINIT_FUNC PyInit_leakext(void) { return PyModule_Create(&module); }
