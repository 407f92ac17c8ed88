/* Shared between the two source files of mcastio._platform.linux._cdrain. */
#ifndef MCASTIO_CDRAIN_H
#define MCASTIO_CDRAIN_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The kernel's cap on messages per sendmmsg call (UIO_MAXIOV). */
#define MCASTIO_MAX_SEND 1024

/* send_many(fd, payloads, address, segment, control=b"") -> messages sent (_csend.c). */
PyObject *mcastio_send_many(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
/* send_each(fd, data, address, controls) -> (bytes sent or -errno, ...) (_csend.c). */
PyObject *mcastio_send_each(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif
