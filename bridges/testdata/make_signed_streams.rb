# frozen_string_literal: true

# Writes signed_streams.json: signed stream names as Rails makes them, the
# vectors the gateway's verifier (gateway/protocols/cable/streams.py) and the Ruby
# bridge's helper (Pushgate::Cable.signed_stream_name) are checked against.
#
# The reference is ActiveSupport itself, as turbo-rails configures it:
# MessageVerifier.new(key, digest: "SHA256", serializer: JSON). Rails 6.1
# encodes with the strict (standard, padded) base64 alphabet; the URL-safe
# variants (padded: AnyCable's Ruby helper; unpadded: Rails 7.1 `url_safe:
# true`) re-encode the same JSON and sign that text. Run it only when the
# contract changes, and say so in the commit:
#
#     ruby bridges/testdata/make_signed_streams.rb
require "json"
require "openssl"
require "active_support"
require "active_support/message_verifier"

KEY = "pushgate-turbo-streams-test-key-0123456789"
OTHER_KEY = "another-turbo-streams-key-nobody-shares-0123"
NAMES = [
  "gid://app/Room/1:messages",
  "Z2lkOi8vYXBwL1Jvb20vMQ:messages",
  "chat",
  "#42",
  "room?0>",       # base64 with "/" (standard) or "_" (URL-safe)
  "Zoë's café ☕",
  "?>>?>>",        # base64 with "+" and "/" characters
  "Ͼ",             # base64 "Is++Ig==": URL-safe, the data itself holds "--"
]

def sign(data, key) = "#{data}--#{OpenSSL::HMAC.hexdigest("SHA256", key, data)}"

verifier = ActiveSupport::MessageVerifier.new(KEY, digest: "SHA256", serializer: JSON)
vectors = NAMES.flat_map do |name|
  standard = verifier.generate(name)
  data = standard.split("--").first
  urlsafe = data.tr("+/", "-_")
  [
    { "name" => name, "alphabet" => "standard", "signed" => standard },
    { "name" => name, "alphabet" => "urlsafe", "signed" => sign(urlsafe, KEY) },
    { "name" => name, "alphabet" => "urlsafe-unpadded", "signed" => sign(urlsafe.delete("="), KEY) },
  ].uniq { |v| v["signed"] }
end
forged = [
  { "why" => "signed with another key", "signed" => ActiveSupport::MessageVerifier.new(OTHER_KEY, digest: "SHA256", serializer: JSON).generate("chat") },
  { "why" => "SHA1, MessageVerifier's default digest", "signed" => ActiveSupport::MessageVerifier.new(KEY, serializer: JSON).generate("chat") },
  { "why" => "a Marshal payload, MessageVerifier's default serializer", "signed" => ActiveSupport::MessageVerifier.new(KEY, digest: "SHA256").generate("chat") },
  { "why" => "not a string", "signed" => verifier.generate({ "stream" => "chat" }) },
  { "why" => "data changed after signing", "signed" => verifier.generate("chat").sub(/\A[A-Za-z0-9]/) { |c| c == "I" ? "J" : "I" } },
  { "why" => "digest in upper case", "signed" => verifier.generate("chat").then { |s| d, h = s.split("--"); "#{d}--#{h.upcase}" } },
  { "why" => "no digest", "signed" => verifier.generate("chat").split("--").first },
]
path = File.join(__dir__, "signed_streams.json")
File.write(path, JSON.pretty_generate({ "key" => KEY, "valid" => vectors, "forged" => forged }) + "\n")
puts "wrote #{path}"
