/* Reconstruct a PNG's filtered scanlines into COCO panoptic segment ids, R + 256 G + 256^2 B.
 *
 * The inflated IDAT stream comes from Python (libdeflate); this undoes the five PNG filter types
 * (PNG specification, 2nd ed., section 9) row by row and packs each pixel's id in the same pass, with
 * the GIL released so that threads decode images in parallel. Only 8-bit RGB / RGBA, non-interlaced:
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
static int unfilter_row(int type, const uint8_t *in, uint8_t *cur, const uint8_t *prior, Py_ssize_t n, int bpp) {
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
        for (; i < n; i++) cur[i] = (uint8_t)(in[i] + paeth(cur[i - bpp], prior[i], prior[i - bpp]));
        return 0;
    default:
        return -1;
    }
}

/* Returns the first row whose filter type is invalid, or -1 when all rows decoded. */
static Py_ssize_t decode(const uint8_t *raw, uint32_t *ids, Py_ssize_t height, Py_ssize_t width, int bpp,
                         uint8_t *rows) {
    Py_ssize_t n = width * bpp, y, x;
    uint8_t *prior = rows, *cur = rows + n, *swap;
    memset(prior, 0, n);
    for (y = 0; y < height; y++) {
        const uint8_t *line = raw + y * (n + 1);
        if (unfilter_row(line[0], line + 1, cur, prior, n, bpp) < 0) return y;
        uint32_t *out = ids + y * width;
        for (x = 0; x < width; x++) {
            const uint8_t *px = cur + x * bpp;
            out[x] = (uint32_t)px[0] | ((uint32_t)px[1] << 8) | ((uint32_t)px[2] << 16);
        }
        swap = prior; prior = cur; cur = swap;
    }
    return -1;
}

static PyObject *decode_ids(PyObject *self, PyObject *args) {
    Py_buffer raw, out;
    Py_ssize_t height, width, bad_row;
    int channels;
    uint8_t *rows;
    if (!PyArg_ParseTuple(args, "y*nniw*", &raw, &height, &width, &channels, &out)) return NULL;
    PyObject *result = NULL;
    if ((channels != 3 && channels != 4) || height <= 0 || width <= 0) {
        PyErr_SetString(PyExc_ValueError, "expected 8-bit RGB or RGBA rows of a non-empty image");
    } else if (raw.len != height * (1 + width * channels)) {
        PyErr_Format(PyExc_ValueError, "image data holds %zd bytes, expected %zd", raw.len,
                     height * (1 + width * channels));
    } else if (out.len < height * width * 4) {
        PyErr_SetString(PyExc_ValueError, "output buffer too small");
    } else if ((rows = malloc(2 * width * channels)) == NULL) {
        PyErr_NoMemory();
    } else {
        Py_BEGIN_ALLOW_THREADS
        bad_row = decode(raw.buf, out.buf, height, width, channels, rows);
        Py_END_ALLOW_THREADS
        free(rows);
        if (bad_row >= 0)
            PyErr_Format(PyExc_ValueError, "row %zd has an unknown filter type", bad_row);
        else {
            Py_INCREF(Py_None);
            result = Py_None;
        }
    }
    PyBuffer_Release(&raw);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"decode_ids", decode_ids, METH_VARARGS,
     "decode_ids(raw, height, width, channels, out): unfilter inflated PNG rows into uint32 ids in out."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_png_ids", NULL, -1, methods};

PyMODINIT_FUNC PyInit__png_ids(void) { return PyModule_Create(&module); }
