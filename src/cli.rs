//! C-Pen-compatible command line (getopt string of C Pen 0.34). Pure. See the cli helper's work.
