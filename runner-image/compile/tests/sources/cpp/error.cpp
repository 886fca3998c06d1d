#include <string>

int main() {
    std::string text = "x";
    return text.no_such_member();
}
