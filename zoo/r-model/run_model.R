# A small sequence model in the Synapse challenge template's shape: reads every FASTA file in
# --input-dir and writes --output-dir/predictions.csv, one row per sequence with the probability
# of each class from a logistic model on three features (GC fraction, CpG observed/expected,
# dinucleotide TA fraction). Base R only; the linear part is one matrix product (BLAS).
#
# usage: Rscript run_model.R --input-dir DIR --output-dir DIR

args <- commandArgs(trailingOnly = TRUE)
option <- function(name) {
  at <- match(name, args)
  if (is.na(at) || at == length(args)) stop(sprintf("missing %s DIR", name), call. = FALSE)
  args[[at + 1]]
}
input_dir <- option("--input-dir")
output_dir <- option("--output-dir")

read_fasta <- function(file) {
  lines <- trimws(readLines(file, warn = FALSE))
  lines <- lines[nzchar(lines)]
  starts <- which(startsWith(lines, ">"))
  ends <- c(starts[-1] - 1, length(lines))
  ids <- sub("^>(\\S+).*$", "\\1", lines[starts], perl = TRUE)
  seqs <- mapply(function(s, e) if (e > s) toupper(paste(lines[(s + 1):e], collapse = "")) else "", starts, ends)
  data.frame(id = ids, seq = unname(seqs), stringsAsFactors = FALSE)
}

count <- function(seq, pattern) lengths(regmatches(seq, gregexpr(pattern, seq, perl = TRUE)))
dinucleotides <- function(seq) max(1, nchar(seq) - 1)

features <- function(seq) {
  n <- nchar(seq)
  c_count <- count(seq, "C")
  g_count <- count(seq, "G")
  # Overlapping matches: a lookahead counts every position.
  cpg <- count(seq, "(?=CG)")
  ta <- count(seq, "(?=TA)")
  gc <- (c_count + g_count) / max(1, n)
  cpg_oe <- if (c_count * g_count > 0) cpg * n / (c_count * g_count) else 0
  c(gc = gc, cpg_oe = cpg_oe, ta = ta / dinucleotides(seq))
}

# Weights (features x classes) and biases of the pretrained model.
# Promoters: GC-rich; enhancers: AT-richer with TA steps.
weights <- matrix(
  c(12.0, -1.0, 0.0,
    -10.0, 0.0, 40.0),
  nrow = 3, dimnames = list(c("gc", "cpg_oe", "ta"), c("promoter", "enhancer"))
)
bias <- c(promoter = -5.0, enhancer = 2.0)

files <- sort(list.files(input_dir, pattern = "\\.(fa|fasta)$", full.names = TRUE))
if (length(files) == 0) stop(sprintf("no FASTA file in %s", input_dir), call. = FALSE)
records <- do.call(rbind, lapply(files, read_fasta))
x <- t(vapply(records$seq, features, numeric(3), USE.NAMES = FALSE))
logits <- x %*% weights + matrix(bias, nrow = nrow(x), ncol = 2, byrow = TRUE)
probabilities <- 1 / (1 + exp(-logits))

dir.create(output_dir, showWarnings = FALSE, recursive = TRUE)
out <- data.frame(id = records$id, promoter = sprintf("%.6f", probabilities[, "promoter"]), enhancer = sprintf("%.6f", probabilities[, "enhancer"]))
write.csv(out, file.path(output_dir, "predictions.csv"), row.names = FALSE, quote = FALSE)
cat(sprintf("wrote %d predictions to %s\n", nrow(out), file.path(output_dir, "predictions.csv")))
