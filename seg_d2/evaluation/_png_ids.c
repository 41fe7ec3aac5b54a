/* Reconstruct a PNG's filtered scanlines into COCO panoptic segment ids, R + 256 G + 256^2 B.
 *
 * The inflated IDAT stream comes from Python (libdeflate); this undoes the five PNG filter types
 * (PNG specification, 2nd ed., section 9) row by row and packs each row's ids, with the GIL released so
 * that threads decode images in parallel. pair_counts streams a ground-truth and a prediction PNG together
 * into PQ's intersection counts without materialising either image. Only 8-bit RGB / RGBA, non-interlaced:
 * the caller sends every other PNG to OpenCV.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline uint8_t paeth(int a, int b, int c) {
    int p = a + b - c;
    int pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    if (pa <= pb && pa <= pc) return (uint8_t)a;
    return (uint8_t)(pb <= pc ? b : c);
}

/* cur = unfiltered row; prior = the previous unfiltered row (zeros above the first). -1: bad filter type. */
static inline int unfilter_row(int type, const uint8_t *restrict in, uint8_t *restrict cur,
                               const uint8_t *restrict prior, Py_ssize_t n, int bpp) {
    Py_ssize_t i;
    switch (type) {
    case 0:
        memcpy(cur, in, n);
        return 0;
    case 1:
        for (i = 0; i < bpp; i++) cur[i] = in[i];
        for (; i < n; i++) cur[i] = (uint8_t)(in[i] + cur[i - bpp]);
        return 0;
    case 2:
        for (i = 0; i < n; i++) cur[i] = (uint8_t)(in[i] + prior[i]);
        return 0;
    case 3:
        for (i = 0; i < bpp; i++) cur[i] = (uint8_t)(in[i] + (prior[i] >> 1));
        for (; i < n; i++) cur[i] = (uint8_t)(in[i] + ((cur[i - bpp] + prior[i]) >> 1));
        return 0;
    case 4:
        for (i = 0; i < bpp; i++) cur[i] = (uint8_t)(in[i] + prior[i]);
        /* where the row above is flat (b == c) Paeth predicts the left byte: the common case in segment maps */
        for (; i < n; i++)
            cur[i] = (uint8_t)(in[i] + (prior[i] == prior[i - bpp] ? cur[i - bpp]
                                                                   : paeth(cur[i - bpp], prior[i], prior[i - bpp])));
        return 0;
    default:
        return -1;
    }
}

/* The rows of one PNG, unfiltered one at a time into two row buffers, with the current row's ids. */
typedef struct {
    const uint8_t *raw;
    Py_ssize_t width, n; /* n = width * bpp bytes per row */
    int bpp;
    int changed; /* whether the last row read differs from the one above it */
    uint8_t *buffer, *prior, *cur;
    uint32_t *ids;
} Rows;

static int rows_open(Rows *r, const uint8_t *raw, Py_ssize_t width, int bpp) {
    r->raw = raw;
    r->width = width;
    r->bpp = bpp;
    r->n = width * bpp;
    r->changed = 1;
    /* two rows of bytes (the row "above" the first is zeros), then one row of ids */
    r->buffer = calloc(2 * r->n + width * sizeof(uint32_t), 1);
    r->prior = r->buffer;
    r->cur = r->buffer + r->n;
    r->ids = (uint32_t *)(r->buffer + 2 * r->n);
    return r->buffer == NULL ? -1 : 0;
}

static int all_zero(const uint8_t *bytes, Py_ssize_t n) {
    uint8_t any = 0;
    Py_ssize_t i;
    for (i = 0; i < n; i++) any |= bytes[i];
    return any == 0;
}

static void pack_ids(const uint8_t *px, uint32_t *ids, Py_ssize_t width, int bpp) {
    Py_ssize_t x;
    if (bpp == 3) /* constant strides let the compiler vectorise */
        for (x = 0; x < width; x++, px += 3) ids[x] = px[0] | (px[1] << 8) | ((uint32_t)px[2] << 16);
    else
        for (x = 0; x < width; x++, px += 4) ids[x] = px[0] | (px[1] << 8) | ((uint32_t)px[2] << 16);
}

/* Unfilter row y (rows must come in order) into r->ids; -1 on an unknown filter type. An "Up" row of
 * zeros repeats the row above, which is most rows of a segment map: nothing to do for it. */
static int rows_next(Rows *r, Py_ssize_t y) {
    const uint8_t *line = r->raw + y * (r->n + 1);
    uint8_t *swap;
    r->changed = !(y > 0 && line[0] == 2 && all_zero(line + 1, r->n));
    if (!r->changed) return 0;
    /* a literal bpp lets the compiler specialise the inlined loops */
    if ((r->bpp == 3 ? unfilter_row(line[0], line + 1, r->cur, r->prior, r->n, 3)
                     : unfilter_row(line[0], line + 1, r->cur, r->prior, r->n, 4)) < 0)
        return -1;
    pack_ids(r->cur, r->ids, r->width, r->bpp);
    swap = r->prior;
    r->prior = r->cur;
    r->cur = swap;
    return 0;
}

/* Checks shared by both entry points; sets a Python error and returns -1 when the data cannot be rows. */
static int check_rows(const Py_buffer *raw, Py_ssize_t height, Py_ssize_t width, int channels) {
    if ((channels != 3 && channels != 4) || height <= 0 || width <= 0) {
        PyErr_SetString(PyExc_ValueError, "expected 8-bit RGB or RGBA rows of a non-empty image");
        return -1;
    }
    if (raw->len != height * (1 + width * channels)) {
        PyErr_Format(PyExc_ValueError, "image data holds %zd bytes, expected %zd", raw->len,
                     height * (1 + width * channels));
        return -1;
    }
    return 0;
}

/* Returns the first row whose filter type is invalid, or -1 when all rows decoded. */
static Py_ssize_t decode(Rows *r, uint32_t *ids, Py_ssize_t height) {
    Py_ssize_t y;
    for (y = 0; y < height; y++) {
        if (rows_next(r, y) < 0) return y;
        memcpy(ids + y * r->width, r->ids, r->width * sizeof(uint32_t));
    }
    return -1;
}

static PyObject *decode_ids(PyObject *self, PyObject *args) {
    Py_buffer raw, out;
    Py_ssize_t height, width, bad_row = -1;
    int channels;
    Rows rows;
    if (!PyArg_ParseTuple(args, "y*nniw*", &raw, &height, &width, &channels, &out)) return NULL;
    PyObject *result = NULL;
    if (check_rows(&raw, height, width, channels) < 0) {
        /* error set */
    } else if (out.len < height * width * 4) {
        PyErr_SetString(PyExc_ValueError, "output buffer too small");
    } else if (rows_open(&rows, raw.buf, width, channels) < 0) {
        PyErr_NoMemory();
    } else {
        Py_BEGIN_ALLOW_THREADS
        bad_row = decode(&rows, out.buf, height);
        Py_END_ALLOW_THREADS
        free(rows.buffer);
        if (bad_row >= 0) {
            PyErr_Format(PyExc_ValueError, "row %zd has an unknown filter type", bad_row);
        } else {
            Py_INCREF(Py_None);
            result = Py_None;
        }
    }
    PyBuffer_Release(&raw);
    PyBuffer_Release(&out);
    return result;
}

/* Segment id -> label as seg_d2's dense_labels numbers them: 1 VOID, 2 + i the i-th listed segment, 0 unlisted. */
typedef struct {
    const uint32_t *ids; /* sorted */
    const int32_t *labels;
    Py_ssize_t count;
} Labels;

static Py_ssize_t label_of(const Labels *t, uint32_t id) {
    Py_ssize_t lo = 0, hi = t->count, mid;
    if (id == 0) return 1;
    while (lo < hi) {
        mid = (lo + hi) / 2;
        if (t->ids[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < t->count && t->ids[lo] == id ? t->labels[lo] : 0;
}

/* One run of equal (gt id, pred id) pixels in a row: its cell of the counts matrix and its length. */
typedef struct {
    Py_ssize_t cell;
    int64_t length;
} Run;

/* The runs of one row pair; ids are looked up once per run, not once per pixel. Returns how many. */
static Py_ssize_t row_runs(const uint32_t *gids, const uint32_t *pids, Py_ssize_t width, const Labels *gl,
                           const Labels *pl, Py_ssize_t cols, Run *runs) {
    Py_ssize_t x, start = 0, count = 0;
    for (x = 1; x <= width; x++) {
        if (x < width && gids[x] == gids[start] && pids[x] == pids[start]) continue;
        runs[count].cell = label_of(gl, gids[start]) * cols + label_of(pl, pids[start]);
        runs[count++].length = x - start;
        start = x;
    }
    return count;
}

/* Pixel counts of (gt label, pred label) pairs. A row pair where neither row changed repeats the runs of the
 * pair above. Returns -1, or the first bad row (*bad_image: 0 gt, 1 pred). */
static Py_ssize_t count_pairs(Rows *gt, Rows *pred, Py_ssize_t height, const Labels *gl, const Labels *pl,
                              int64_t *counts, Py_ssize_t cols, Run *runs, int *bad_image) {
    Py_ssize_t y, k, nruns = 0;
    for (y = 0; y < height; y++) {
        if (rows_next(gt, y) < 0) return *bad_image = 0, y;
        if (rows_next(pred, y) < 0) return *bad_image = 1, y;
        if (gt->changed || pred->changed) nruns = row_runs(gt->ids, pred->ids, gt->width, gl, pl, cols, runs);
        for (k = 0; k < nruns; k++) counts[runs[k].cell] += runs[k].length;
    }
    return -1;
}

static int open_labels(Labels *t, const Py_buffer *ids, const Py_buffer *labels) {
    if (ids->len % 4 || labels->len != ids->len) {
        PyErr_SetString(PyExc_ValueError, "segment ids (uint32) and labels (int32) must have one length");
        return -1;
    }
    t->ids = ids->buf;
    t->labels = labels->buf;
    t->count = ids->len / 4;
    return 0;
}

static PyObject *pair_counts(PyObject *self, PyObject *args) {
    Py_buffer graw, praw, gid, glab, pid, plab, out;
    Py_ssize_t height, width, rows_n, cols, bad_row = -1;
    int gch, pch, bad_image = 0;
    Labels gl, pl;
    Rows gr = {0}, pr = {0};
    Run *runs = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*nniiy*y*y*y*nnw*", &graw, &praw, &height, &width, &gch, &pch, &gid, &glab, &pid,
                          &plab, &rows_n, &cols, &out))
        return NULL;
    if (check_rows(&graw, height, width, gch) < 0 || check_rows(&praw, height, width, pch) < 0 ||
        open_labels(&gl, &gid, &glab) < 0 || open_labels(&pl, &pid, &plab) < 0) {
        /* error set */
    } else if (rows_n != gl.count + 2 || cols != pl.count + 2 || out.len != rows_n * cols * 8) {
        PyErr_SetString(PyExc_ValueError, "counts must be a zeroed int64 array of (gt segments + 2, pred segments + 2)");
    } else if (rows_open(&gr, graw.buf, width, gch) < 0 || rows_open(&pr, praw.buf, width, pch) < 0 ||
               (runs = malloc(width * sizeof(Run))) == NULL) {
        PyErr_NoMemory();
    } else {
        Py_BEGIN_ALLOW_THREADS
        bad_row = count_pairs(&gr, &pr, height, &gl, &pl, out.buf, cols, runs, &bad_image);
        Py_END_ALLOW_THREADS
        if (bad_row >= 0) {
            PyErr_Format(PyExc_ValueError, "row %zd of the %s has an unknown filter type", bad_row,
                         bad_image ? "prediction" : "ground truth");
        } else {
            Py_INCREF(Py_None);
            result = Py_None;
        }
    }
    free(runs);
    free(gr.buffer);
    free(pr.buffer);
    PyBuffer_Release(&graw);
    PyBuffer_Release(&praw);
    PyBuffer_Release(&gid);
    PyBuffer_Release(&glab);
    PyBuffer_Release(&pid);
    PyBuffer_Release(&plab);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"decode_ids", decode_ids, METH_VARARGS,
     "decode_ids(raw, height, width, channels, out): unfilter inflated PNG rows into uint32 ids in out."},
    {"pair_counts", pair_counts, METH_VARARGS,
     "pair_counts(gt_raw, pred_raw, height, width, gt_channels, pred_channels, gt_ids, gt_labels, pred_ids, "
     "pred_labels, rows, cols, counts): add the pixel counts of (gt label, pred label) pairs of two PNGs' rows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_png_ids", NULL, -1, methods};

PyMODINIT_FUNC PyInit__png_ids(void) { return PyModule_Create(&module); }
