// The entry point for llama-bench.cpp versions that define `llama_bench`
// instead of `main` (see CMakeLists.txt beside this file).
int llama_bench(int argc, char ** argv);

int main(int argc, char ** argv) {
    return llama_bench(argc, argv);
}
